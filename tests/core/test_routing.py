"""Request-aware routing through the httpx transports, measured by the backends' own counts."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import lbclient
from lbclient import NoAvailableInstance
from lbclient.routing import SubsetRouter
from lbclient.testing import HTTPBackend

from ._support import PLAIN, Mode, assert_settled


def entries(backends: list[HTTPBackend], **metadata: list[str]) -> list[dict[str, Any]]:
    """Static entries named after the backends, with per-backend metadata values."""
    rows = []
    for index, backend in enumerate(backends):
        meta = {key: values[index] for key, values in metadata.items() if values[index]}
        rows.append({"address": backend.address, "id": backend.name, "metadata": meta})
    return rows


def run(
    mode: Mode,
    lb: lbclient.LoadBalancer,
    requests: list[dict[str, Any]],
    url: str = "http://orders/",
    check: Callable[[httpx.Response], None] | None = None,
) -> collections.Counter[str]:
    """Send each request (keywords of ``client.get``) through one client; the backends that
    answered, counted from the answers."""
    seen: collections.Counter[str] = collections.Counter()
    if mode == "sync":
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
            for kwargs in requests:
                response = client.get(url, **kwargs)
                if check:
                    check(response)
                seen[response.json()["backend"]] += 1
        return seen

    async def go() -> None:
        transport = lbclient.AsyncLoadBalancedTransport(lb)
        async with httpx.AsyncClient(transport=transport) as client:
            for kwargs in requests:
                response = await client.get(url, **kwargs)
                if check:
                    check(response)
                seen[response.json()["backend"]] += 1

    asyncio.run(go())
    return seen


def counts(backends: list[HTTPBackend]) -> dict[str, int]:
    return {b.name: b.requests for b in backends}


def test_hint_header_routes_to_matching_instances(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": entries(backends, hint=["blue", "blue", "green"])},
        services={"orders": {"hint_header": "X-SC-LB-Hint"}},
    )
    run(mode, lb, [{"headers": {"X-SC-LB-Hint": "blue"}}] * 20)
    assert counts(backends) == {"a": 10, "b": 10, "c": 0}
    run(mode, lb, [{"headers": {"X-SC-LB-Hint": "green"}}] * 5)
    assert counts(backends)["c"] == 5
    # No instance has the hint, or no hint at all: every instance (Spring).
    run(mode, lb, [{"headers": {"X-SC-LB-Hint": "red"}}] * 15 + [{}] * 15)
    assert counts(backends) == {"a": 20, "b": 20, "c": 15}
    assert_settled(lb)
    lb.close()


def test_default_hint_for_requests_that_name_none(mode: Mode, backends: list[HTTPBackend]) -> None:
    """Spring's ``hint.<service>``: requests without the header take the configured hint."""
    lb = lbclient.LoadBalancer(
        {"orders": entries(backends, hint=["blue", "green", "green"])},
        services={"orders": {"hint": "green"}},
    )
    run(mode, lb, [{}] * 6)  # no header: the default hint
    assert counts(backends) == {"a": 0, "b": 3, "c": 3}
    run(mode, lb, [{"headers": {"X-SC-LB-Hint": "blue"}}] * 2)  # Spring's header wins
    assert counts(backends)["a"] == 2
    lb.close()


def test_hint_key_is_configurable(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": entries(backends, lane=["", "fast", ""])},
        hint_header="x-lane",
        hint_key="lane",
    )
    run(mode, lb, [{"headers": {"x-lane": "fast"}}] * 7)
    assert counts(backends) == {"a": 0, "b": 7, "c": 0}
    lb.close()


def test_sticky_cookie_pins_and_falls_back(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": entries(backends)}, sticky_cookie="sc-lb-instance-id", **PLAIN
    )
    run(mode, lb, [{"headers": {"Cookie": "theme=dark; sc-lb-instance-id=b"}}] * 9)
    assert counts(backends) == {"a": 0, "b": 9, "c": 0}
    # An unknown id, then an instance that is gone: normal picking.
    run(mode, lb, [{"headers": {"Cookie": "sc-lb-instance-id=zz"}}] * 3)
    assert sum(counts(backends).values()) == 12
    assert counts(backends)["b"] == 10
    lb.close()


def test_sticky_set_cookie_keeps_a_client_on_one_instance(
    mode: Mode, backends: list[HTTPBackend]
) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": entries(backends)},
        services={"orders": {"sticky_cookie": "lb-id", "sticky_set_cookie": True}},
    )

    def names_instance(response: httpx.Response) -> None:
        assert response.headers["set-cookie"] == f"lb-id={response.json()['backend']}; Path=/"

    seen = run(mode, lb, [{}] * 12, check=names_instance)
    assert len(seen) == 1
    assert sum(seen.values()) == 12
    assert_settled(lb)
    lb.close()


def test_same_instance_preference(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": entries(backends)}, same_instance=True, **PLAIN)
    first = run(mode, lb, [{}] * 10)
    assert len(first) == 1
    (chosen,) = first
    gone = next(b for b in backends if b.name == chosen)
    lb.service("orders").apply(
        [lbclient.ServiceInstance("orders", "127.0.0.1", b.port, id=b.name)
         for b in backends if b is not gone]
    )  # fmt: skip
    after = run(mode, lb, [{}] * 10)
    assert len(after) == 1
    assert chosen not in after
    lb.close()


def test_subset_by_header_and_canary_split(mode: Mode, backends: list[HTTPBackend]) -> None:
    router = SubsetRouter("version", header="x-version", split={"v1": 95, "v2": 5})
    lb = lbclient.LoadBalancer(
        {"orders": entries(backends, version=["v1", "v1", "v2"])}, routers=[router]
    )
    run(mode, lb, [{"headers": {"x-version": "v2"}}] * 6)
    assert counts(backends) == {"a": 0, "b": 0, "c": 6}
    run(mode, lb, [{}] * 1000)
    after = counts(backends)
    canary = after["c"] - 6
    assert canary == 50  # the smooth cycle: one in twenty, exactly, over whole cycles
    assert abs(after["a"] - after["b"]) <= 1  # round robin inside the v1 subset
    assert_settled(lb)
    lb.close()


@pytest.mark.parametrize("fallback", ["any", "default", "fail"])
def test_subset_fallback_policies(mode: Mode, backends: list[HTTPBackend], fallback: str) -> None:
    router = SubsetRouter(
        "version",
        header="x-version",
        fallback=fallback,
        default="v1" if fallback == "default" else None,
    )
    lb = lbclient.LoadBalancer(
        {"orders": entries(backends, version=["v1", "v2", "v2"])}, routers=[router]
    )
    request = [{"headers": {"x-version": "v3"}}] * 6
    if fallback == "fail":
        with pytest.raises(NoAvailableInstance, match="subset version='v3'"):
            run(mode, lb, request)
        assert counts(backends) == {"a": 0, "b": 0, "c": 0}
    else:
        run(mode, lb, request)
        expected = {"a": 2, "b": 2, "c": 2} if fallback == "any" else {"a": 6, "b": 0, "c": 0}
        assert counts(backends) == expected
    assert_settled(lb)
    lb.close()


def test_priority_spills_with_the_overprovisioning_factor(
    mode: Mode, backends: list[HTTPBackend]
) -> None:
    extra = [HTTPBackend(name).start() for name in "de"]
    try:
        everyone = backends + extra  # a, b: priority 0; c, d, e: priority 1
        rows = [
            {"address": b.address, "id": b.name, "priority": 0 if b.name in "ab" else 1}
            for b in everyone
        ]
        lb = lbclient.LoadBalancer(
            {"orders": rows},
            outlier=lbclient.OutlierDetection(consecutive_5xx=1, max_ejection_percent=100),
        )
        run(mode, lb, [{}] * 20)
        assert counts(everyone) == {"a": 10, "b": 10, "c": 0, "d": 0, "e": 0}
        backends[1].status = 503  # b fails once: ejected, P0 is 50% healthy
        run(mode, lb, [{}] * 2)  # the 503 is retried on another instance
        assert lb.stats("orders")["priority_loads"] == {0: 70, 1: 30}
        before = counts(everyone)
        run(mode, lb, [{}] * 100)
        after = {k: counts(everyone)[k] - before[k] for k in before}
        assert after["b"] == 0
        assert after["a"] == 70  # Envoy: 50% healthy x 1.4 = 70% stays in priority 0
        assert after["c"] + after["d"] + after["e"] == 30
        lb.close()
    finally:
        for backend in extra:
            backend.stop()


def test_zone_aware_routing_keeps_a_share_in_proportion(mode: Mode) -> None:
    """Envoy's zone-aware routing: 2 of 8 instances in the caller's zone b, half the callers
    there: b keeps 50% of this caller's traffic (all-or-nothing preference kept 100%)."""
    started = [HTTPBackend(name).start() for name in "abcdefgh"]
    try:
        rows = [
            {"address": b.address, "id": b.name, "zone": "zb" if b.name in "ab" else "za"}
            for b in started
        ]
        aware = lbclient.LoadBalancer(
            {"orders": rows},
            zone="zb",
            zone_routing="aware",
            caller_zones={"za": 1, "zb": 1},
            **PLAIN,
        )
        run(mode, aware, [{}] * 200)
        local = counts(started)["a"] + counts(started)["b"]
        assert local == 100  # the smooth cycle: exactly half over whole cycles
        assert aware.stats("orders")["zone_shares"] == {"zb": 5000, "za": 5000}
        aware.close()
        prefer = lbclient.LoadBalancer({"orders": rows}, zone="zb", **PLAIN)
        before = counts(started)
        run(mode, prefer, [{}] * 20)
        after = {k: counts(started)[k] - before[k] for k in before}
        assert after["a"] + after["b"] == 20
        prefer.close()
    finally:
        for backend in started:
            backend.stop()
