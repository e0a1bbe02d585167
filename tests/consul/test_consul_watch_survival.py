"""Consul answers that cannot be applied keep the last good state whole; the watch converges.

A user's scheduler that cannot be built over an instance whose Meta says "explode" (the
``fragile_scheduler`` fixture) stands for any failure between an answer and the scheduler (a
``Weights.Passing`` of 1e308 under wrr once raised OverflowError and killed the watch).
Also: balancers dropped without ``close()`` stop their watch threads when collected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from consul_helpers import lbclient_threads, wait_until

import lbclient
from lbclient.consul import ConsulRegistry
from lbclient.registry._loop import SharedLoop
from lbclient.testing.consul import ConsulTestServer

Whole = Callable[..., dict[str, lbclient.ServiceInstance]]


def members(whole: Whole, lb: lbclient.LoadBalancer) -> set[str]:
    """The ids of the membership in force, once checked whole (see the root conftest)."""
    return set(whole(lb.service("orders")))


def put(agent: Any, name: str, port: int, *, explode: bool = False) -> None:
    meta = {"mark": "explode"} if explode else {}
    agent.agent.service.register(
        "orders", service_id=name, address="127.0.0.1", port=port, meta=meta
    )


def registry(server: ConsulTestServer) -> ConsulRegistry:
    return ConsulRegistry(port=server.port, wait="2s", min_backoff=0.02, max_backoff=0.2)


def scenario(agent: Any) -> list[Callable[[], None]]:
    """The steps: a good list, answers that cannot apply (c arrives, then a leaves: the
    last of them lists b and c), the next good answer."""
    return [
        lambda: (put(agent, "a", 8001), put(agent, "b", 8002)),
        lambda: (put(agent, "c", 8003, explode=True), agent.agent.service.deregister("a")),
        lambda: (agent.agent.service.deregister("c"), put(agent, "d", 8004)),
    ]  # type: ignore[return-value]


def test_sync_watch_keeps_the_last_good_state_and_converges(
    server: ConsulTestServer,
    agent: Any,
    fragile_scheduler: Callable[..., Any],
    whole: Whole,
) -> None:
    first, bad, good = scenario(agent)
    first()
    with lbclient.LoadBalancer(registry(server), scheduler=fragile_scheduler("wrr")) as lb:
        assert members(whole, lb) == {"a", "b"}
        bad()
        wait_until(lambda: "2 instance(s)" in (lb.stats("orders")["registry_error"] or ""))
        assert "OverflowError" in lb.stats("orders")["registry_error"]
        assert members(whole, lb) == {"a", "b"}  # a, deregistered, stays with its scheduler
        assert {lb.pick("orders").instance.id for _ in range(20)} == {"a", "b"}
        good()
        wait_until(lambda: set(lb.service("orders").endpoints) == {"b", "d"})
        assert members(whole, lb) == {"b", "d"}
        assert lb.stats("orders")["registry_error"] is None
    assert lbclient_threads() == []


async def test_async_watch_keeps_the_last_good_state_and_converges(
    server: ConsulTestServer,
    agent: Any,
    fragile_scheduler: Callable[..., Any],
    whole: Whole,
) -> None:
    first, bad, good = scenario(agent)
    first()

    async def until(condition: Callable[[], bool]) -> None:
        start = time.monotonic()
        while not condition():
            assert time.monotonic() - start < 15, "never converged"
            await asyncio.sleep(0.01)

    async with lbclient.LoadBalancer(registry(server), scheduler=fragile_scheduler()) as lb:
        await lb.apick("orders")
        assert members(whole, lb) == {"a", "b"}
        bad()
        await until(lambda: "2 instance(s)" in (lb.stats("orders")["registry_error"] or ""))
        assert "OverflowError" in lb.stats("orders")["registry_error"]
        assert members(whole, lb) == {"a", "b"}
        good()
        await until(lambda: set(lb.service("orders").endpoints) == {"b", "d"})
        assert members(whole, lb) == {"b", "d"}
        assert lb.stats("orders")["registry_error"] is None


def test_dropped_balancers_stop_querying_consul(server: ConsulTestServer, agent: Any) -> None:
    put(agent, "a", 8001)
    assert lbclient_threads() == []
    balancers = [lbclient.LoadBalancer(registry(server)) for _ in range(5)]
    for lb in balancers:
        lb.pick("orders").done()
    del lb
    watching = [n for n in lbclient_threads() if n.startswith("lbclient-watch-")]
    assert watching == ["lbclient-watch-loop"]  # one thread for every watch of the process
    watches = [n for n in SharedLoop.task_names() if n.startswith("lbclient-watch-")]
    assert watches == ["lbclient-watch-consul:orders"] * 5  # one watch each
    with pytest.warns(ResourceWarning) as caught:
        balancers.clear()
    assert len(caught) == 5
    assert lbclient_threads() == []
    time.sleep(0.3)  # a query sent just before the close may still be reaching the server
    queries = sum(server.requests.values())
    time.sleep(0.5)
    assert sum(server.requests.values()) == queries
