"""EndpointSlice answers that cannot be applied keep the last good state whole, sync and async.

A user's scheduler that cannot be built over a pod on node "explode" (the ``fragile_scheduler``
fixture) stands for any failure between an answer and the scheduler; the watch goes on and
converges to the next good answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from k8s_support import NS, wait_for

import lbclient
from lbclient.kubernetes import KubernetesRegistry
from lbclient.testing.kubernetes import KubernetesTestServer

Whole = Callable[..., dict[str, lbclient.ServiceInstance]]


def registry(configuration: Any) -> KubernetesRegistry:
    return KubernetesRegistry(
        NS, port="http", configuration=configuration, min_backoff=0.02, max_backoff=0.2
    )


def members(whole: Whole, lb: lbclient.LoadBalancer) -> set[int]:
    """Ports of the membership in force, once checked whole (see the root conftest)."""
    return {instance.port for instance in whole(lb.service("orders")).values()}


def pods(*ports: int) -> list[str]:
    return [f"127.0.0.1:{port}" for port in ports]


def rejected_at(lb: lbclient.LoadBalancer, size: int) -> bool:
    return f"of {size} instance(s)" in (lb.stats("orders")["registry_error"] or "")


def test_sync_watch_keeps_the_last_good_state_and_converges(
    api: KubernetesTestServer,
    configuration: Any,
    fragile_scheduler: Callable[..., Any],
    whole: Whole,
) -> None:
    api.scale(NS, "orders", pods(8001, 8002))
    with lbclient.LoadBalancer(registry(configuration), scheduler=fragile_scheduler()) as lb:
        assert members(whole, lb) == {8001, 8002}
        api.scale(NS, "orders", pods(8002, 8003), node="explode")  # 8003 added, then 8001 gone
        wait_for(lambda: rejected_at(lb, 2))
        assert "OverflowError" in lb.stats("orders")["registry_error"]
        assert members(whole, lb) == {8001, 8002}
        assert {lb.pick("orders").instance.port for _ in range(20)} == {8001, 8002}
        api.scale(NS, "orders", pods(8002, 8004))
        wait_for(lambda: members(whole, lb) == {8002, 8004})
        assert lb.stats("orders")["registry_error"] is None
    assert [t for t in threading.enumerate() if t.name.startswith("lbclient-watch-")] == []


async def test_async_watch_keeps_the_last_good_state_and_converges(
    api: KubernetesTestServer,
    configuration: Any,
    fragile_scheduler: Callable[..., Any],
    whole: Whole,
) -> None:
    async def until(condition: Callable[[], bool]) -> None:
        start = time.monotonic()
        while not condition():
            assert time.monotonic() - start < 15, "never converged"
            await asyncio.sleep(0.01)

    api.scale(NS, "orders", pods(8001, 8002))
    lb = lbclient.LoadBalancer(registry(configuration), scheduler=fragile_scheduler("ring_hash"))
    async with lb:
        await lb.apick("orders")
        assert members(whole, lb) == {8001, 8002}
        api.scale(NS, "orders", pods(8002, 8003), node="explode")
        await until(lambda: rejected_at(lb, 2))
        assert members(whole, lb) == {8001, 8002}
        api.scale(NS, "orders", pods(8002, 8004))
        await until(lambda: members(whole, lb) == {8002, 8004})
        assert lb.stats("orders")["registry_error"] is None
    await asyncio.sleep(0)  # let the cancelled watch task close its aiohttp session
