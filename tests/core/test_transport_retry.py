"""Retries: failover to another instance, which methods and statuses, replayability, budget."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from tenacity import wait_none

import lbclient
from lbclient import RetryPolicy
from lbclient.testing import HTTPBackend, free_port

from ._support import PLAIN, Mode, assert_settled, instances, send

FAST = RetryPolicy(wait=wait_none())


def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"


def test_failover_when_a_backend_is_down(mode: Mode, backends: list[HTTPBackend]) -> None:
    dead = dead_address()
    lb = lbclient.LoadBalancer({"orders": [dead, backends[0].address, backends[1].address]})
    for method in ("GET", "POST"):  # the request never left: safe for every method
        for _ in range(12):
            assert send(mode, lb, method, "http://orders/").status_code == 200
    rows = {row["address"]: row for row in instances(lb, "orders")}
    assert rows[dead]["successes"] == 0
    assert rows[dead]["failures"] == rows[dead]["picks"] > 0
    assert backends[0].requests + backends[1].requests == 24
    assert_settled(lb)


def test_a_backend_that_goes_down_mid_run(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends]})
    for _ in range(6):
        assert send(mode, lb, "GET", "http://orders/").status_code == 200
    backends[1].stop()
    for _ in range(12):
        assert send(mode, lb, "GET", "http://orders/").status_code == 200
    rows = {row["address"]: row for row in instances(lb, "orders")}
    assert rows[backends[1].address]["failures"] >= 1  # found out, and not by the caller
    assert_settled(lb)


def test_every_instance_down_raises_the_connect_error(mode: Mode) -> None:
    addresses = [dead_address() for _ in range(3)]
    lb = lbclient.LoadBalancer({"orders": addresses}, retry=FAST)
    with pytest.raises(httpx.ConnectError) as caught:
        send(mode, lb, "GET", "http://orders/")
    note = " ".join(getattr(caught.value, "__notes__", []))
    assert "lbclient: orders: 3 attempt(s) on" in note
    for address in addresses:  # avoid_previous: one attempt on each
        assert address in note
    assert [row["failures"] for row in instances(lb, "orders")] == [1, 1, 1]
    assert_settled(lb)


def test_503_is_retried_for_get_but_not_for_post(mode: Mode, backends: list[HTTPBackend]) -> None:
    backends[0].status = 503
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends[:2]]}, retry=FAST, **PLAIN)
    for _ in range(10):
        response = send(mode, lb, "GET", "http://orders/")
        assert response.status_code == 200
        assert response.json()["backend"] == "b"
    get_attempts = backends[0].requests + backends[1].requests
    assert backends[0].requests >= 4  # round robin kept sending first attempts there
    assert get_attempts == 10 + backends[0].requests

    statuses = [
        send(mode, lb, "POST", "http://orders/", content=b"x").status_code for _ in range(10)
    ]
    assert statuses.count(503) == 5  # half the first attempts land on a, and stay there
    assert backends[0].requests + backends[1].requests == get_attempts + 10
    assert_settled(lb)


def test_retrying_every_method_is_opt_in(mode: Mode, backends: list[HTTPBackend]) -> None:
    backends[0].status = 503
    policy = RetryPolicy(methods=None, wait=wait_none())
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends[:2]]}, retry=policy, **PLAIN)
    for _ in range(6):
        assert send(mode, lb, "POST", "http://orders/", content=b"x").status_code == 200
    assert backends[0].requests >= 3  # every POST that met the 503 went on to b
    assert backends[1].requests == 6


def test_configured_statuses(mode: Mode, backends: list[HTTPBackend]) -> None:
    backends[0].status = 429
    policy = RetryPolicy(statuses=frozenset({429}), wait=wait_none())
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends[:2]]}, retry=policy, **PLAIN)
    assert all(send(mode, lb, "GET", "http://orders/").status_code == 200 for _ in range(4))
    backends[1].status = 500  # not in statuses: returned as is
    assert send(mode, lb, "GET", "http://orders/").status_code in (429, 500)


def test_exhausted_retries_return_the_last_answer(mode: Mode, backends: list[HTTPBackend]) -> None:
    for backend in backends:
        backend.status = 503
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends]}, retry=FAST)
    response = send(mode, lb, "GET", "http://orders/")
    assert response.status_code == 503
    assert [b.requests for b in backends] == [1, 1, 1]  # three attempts, three instances
    rows = instances(lb, "orders")
    assert sum(row["failures"] for row in rows) == 3  # every attempt reported its outcome
    assert_settled(lb)


def test_a_read_timeout_is_retried_only_when_idempotent(mode: Mode) -> None:
    with HTTPBackend("slow", delay=2.0) as slow, HTTPBackend("fast") as fast:
        lb = lbclient.LoadBalancer({"orders": [slow.address, fast.address]}, retry=FAST, **PLAIN)
        for _ in range(4):
            response = send(mode, lb, "GET", "http://orders/", timeout=0.25)
            assert response.json()["backend"] == "fast"
        assert slow.requests >= 1  # those GETs timed out there and went on to fast
        before = slow.requests
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(send(mode, lb, "POST", "http://orders/", timeout=0.25).status_code)
            except httpx.ReadTimeout:
                outcomes.append("timeout")
        # A POST that may have reached slow is not sent again: each one there is a timeout.
        assert outcomes.count("timeout") == slow.requests - before >= 1
        assert_settled(lb)


def sync_chunks() -> Iterator[bytes]:
    yield b"part-1,"
    yield b"part-2"


async def async_chunks() -> AsyncIterator[bytes]:
    yield b"part-1,"
    yield b"part-2"


def test_a_streaming_body_is_never_retried(mode: Mode, backends: list[HTTPBackend]) -> None:
    for backend in backends:
        backend.status = 503
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends]}, retry=FAST, **PLAIN)
    body: Any = sync_chunks() if mode == "sync" else async_chunks()
    response = send(mode, lb, "PUT", "http://orders/", content=body)
    assert response.status_code == 503
    assert sum(b.requests for b in backends) == 1
    # The same request with a replayable body goes round all three.
    assert send(mode, lb, "PUT", "http://orders/", content=b"part-1,part-2").status_code == 503
    assert sum(b.requests for b in backends) == 4


def test_a_streaming_body_is_not_retried_after_a_refused_connection(mode: Mode) -> None:
    lb = lbclient.LoadBalancer({"orders": [dead_address()]}, retry=FAST, **PLAIN)
    body: Any = sync_chunks() if mode == "sync" else async_chunks()
    with pytest.raises(httpx.ConnectError):
        send(mode, lb, "PUT", "http://orders/", content=body)
    assert instances(lb, "orders")[0]["picks"] == 1
    with pytest.raises(httpx.ConnectError):
        send(mode, lb, "PUT", "http://orders/", content=b"replayable")
    assert instances(lb, "orders")[0]["picks"] == 4  # 1 + 3 attempts on the only instance


def test_the_retry_budget_caps_retries_during_an_outage(
    mode: Mode, backends: list[HTTPBackend]
) -> None:
    for backend in backends:
        backend.status = 503
    # 10% of requests may be retried, nothing trickles in with time: deterministic bounds.
    policy = RetryPolicy(attempts=3, budget_ratio=0.1, budget_min_per_second=0, wait=wait_none())
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends]}, retry=policy, **PLAIN)
    requests = 40
    for _ in range(requests):
        assert send(mode, lb, "GET", "http://orders/").status_code == 503
    attempts = sum(b.requests for b in backends)
    retries = attempts - requests
    # Without the budget: 80 retries. With it: the initial token plus 10% of the requests.
    assert 1 <= retries <= 1 + requests * 0.1 + 1
    stats = lb.stats("orders")
    assert stats["retries_refused_by_budget"] >= requests - retries - 1
    assert_settled(lb)


def test_default_budget_lets_a_healthy_service_retry(backends: list[HTTPBackend]) -> None:
    backends[0].status = 503
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends]}, retry=FAST)
    assert all(send("sync", lb, "GET", "http://orders/").status_code == 200 for _ in range(30))
    assert lb.stats("orders")["retries_refused_by_budget"] == 0
