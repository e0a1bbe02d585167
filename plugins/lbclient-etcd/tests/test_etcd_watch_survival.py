"""etcd answers that cannot be applied keep the last good state whole; the watch converges.

A user's scheduler that cannot be built over an instance whose metadata says "explode" (the
``fragile_scheduler`` fixture of the root conftest) stands for any failure between an answer
and the scheduler, through the blocking watch thread and the asyncio watch task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from lbclient_etcd import EtcdRegistrar, EtcdRegistry
from lbclient_etcd.testing import EtcdServer

import lbclient
from lbclient import ServiceInstance

Whole = Callable[..., dict[str, ServiceInstance]]


def member(port: int, *, explode: bool = False) -> ServiceInstance:
    metadata = {"mark": "explode"} if explode else {}
    return ServiceInstance("survive", "127.0.0.1", port, metadata=metadata)


def ports(whole: Whole, lb: lbclient.LoadBalancer) -> set[int]:
    """Ports of the membership in force, once checked whole (see the root conftest)."""
    return {instance.port for instance in whole(lb.service("survive")).values()}


def rejected_at(lb: lbclient.LoadBalancer, size: int) -> bool:
    return f"of {size} instance(s)" in (lb.stats("survive")["registry_error"] or "")


def wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never converged"
        time.sleep(0.02)


async def await_(condition: Callable[[], bool], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "never converged"
        await asyncio.sleep(0.02)


def test_sync_watch_keeps_the_last_good_state_and_converges(
    etcd: EtcdServer, fragile_scheduler: Callable[..., Any], whole: Whole
) -> None:
    registry = EtcdRegistry(etcd.url)
    a = EtcdRegistrar(registry, member(9301), ttl=5).start()
    b = EtcdRegistrar(registry, member(9302), ttl=5).start()
    try:
        with lbclient.LoadBalancer(registry, scheduler=fragile_scheduler("maglev")) as lb:
            assert ports(whole, lb) == {9301, 9302}
            with EtcdRegistrar(registry, member(9303, explode=True), ttl=5):
                a.close()
                wait(lambda: rejected_at(lb, 2))  # b and the marked c
                assert "OverflowError" in lb.stats("survive")["registry_error"]
                assert ports(whole, lb) == {9301, 9302}
                assert {lb.pick("survive").instance.port for _ in range(20)} <= {9301, 9302}
            with EtcdRegistrar(registry, member(9304), ttl=5):
                wait(lambda: ports(whole, lb) == {9302, 9304})
                assert lb.stats("survive")["registry_error"] is None
    finally:
        b.close()
        registry.close()


async def test_async_watch_keeps_the_last_good_state_and_converges(
    etcd: EtcdServer, fragile_scheduler: Callable[..., Any], whole: Whole
) -> None:
    registry = EtcdRegistry(etcd.url)
    a = EtcdRegistrar(registry, member(9311), ttl=5).start()
    b = EtcdRegistrar(registry, member(9312), ttl=5).start()
    try:
        async with lbclient.LoadBalancer(registry, scheduler=fragile_scheduler()) as lb:
            await lb.apick("survive")
            assert ports(whole, lb) == {9311, 9312}
            c = await asyncio.to_thread(
                EtcdRegistrar(registry, member(9313, explode=True), ttl=5).start
            )
            await asyncio.to_thread(a.close)
            await await_(lambda: rejected_at(lb, 2))
            assert ports(whole, lb) == {9311, 9312}
            await asyncio.to_thread(c.close)
            d = await asyncio.to_thread(EtcdRegistrar(registry, member(9314), ttl=5).start)
            await await_(lambda: ports(whole, lb) == {9312, 9314})
            assert lb.stats("survive")["registry_error"] is None
            await asyncio.to_thread(d.close)
    finally:
        b.close()
        registry.close()
