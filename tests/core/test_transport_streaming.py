"""A streamed response keeps its instance busy until the body is closed."""

from __future__ import annotations

import httpx
import pytest

import lbclient
from lbclient.testing import HTTPBackend

from ._support import PLAIN, assert_settled, instances


def in_flight(lb: lbclient.LoadBalancer) -> int:
    return sum(row["in_flight"] for row in instances(lb, "orders"))


def test_sync_stream_keeps_in_flight_until_closed(backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]})
    with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
        with client.stream("GET", "http://orders/big") as response:
            assert response.status_code == 200
            assert in_flight(lb) == 1
            assert b"".join(response.iter_bytes())
            assert in_flight(lb) == 0  # httpx closes a stream once it is read to the end
        assert in_flight(lb) == 0
        response = client.send(client.build_request("GET", "http://orders/"), stream=True)
        assert in_flight(lb) == 1
        response.close()  # closed unread: released as well
    assert instances(lb, "orders")[0]["successes"] == 2
    assert_settled(lb)


async def test_async_stream_keeps_in_flight_until_closed(backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]})
    async with httpx.AsyncClient(transport=lbclient.AsyncLoadBalancedTransport(lb)) as client:
        async with client.stream("GET", "http://orders/big") as response:
            assert in_flight(lb) == 1
            assert [chunk async for chunk in response.aiter_bytes()]
            assert in_flight(lb) == 0
        assert in_flight(lb) == 0
    assert instances(lb, "orders")[0]["successes"] == 1
    assert_settled(lb)


def test_an_error_status_counts_as_a_failure_when_the_body_is_closed(
    backends: list[HTTPBackend],
) -> None:
    backends[0].status = 500  # not retried: returned to the caller, and blamed on the instance
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]}, **PLAIN)
    with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
        assert client.get("http://orders/").status_code == 500
    row = instances(lb, "orders")[0]
    assert (row["successes"], row["failures"], row["in_flight"]) == (0, 1, 0)


def test_a_stream_abandoned_by_an_exception_is_released(backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]})
    client = httpx.Client(transport=lbclient.LoadBalancedTransport(lb))
    with client, pytest.raises(RuntimeError), client.stream("GET", "http://orders/"):
        raise RuntimeError("the caller gave up half way")
    assert_settled(lb)
