"""DNS answers that cannot be applied keep the last good state whole; the watch converges.

A user's scheduler that cannot be built over the address 127.0.0.66 (the ``fragile_scheduler``
fixture of the root conftest) stands for any failure between an answer and the scheduler,
through the blocking watch thread and the asyncio watch task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from lbclient_dns.testing import DnsmasqServer

import lbclient
from lbclient import ServiceInstance

NAME = "orders.svc.example"
FAST = "timeout=0.5&min_ttl=0.2&max_ttl=1"
Whole = Callable[..., dict[str, ServiceInstance]]


def marked(instance: ServiceInstance) -> bool:
    return instance.host == "127.0.0.66"


def balancer(dnsmasq: DnsmasqServer, fragile: Callable[..., Any]) -> lbclient.LoadBalancer:
    registry = lbclient.registry_from_uri(
        f"dns://{{service}}.svc.example:8080?nameserver={dnsmasq.address}&{FAST}"
    )
    return lbclient.LoadBalancer(registry, scheduler=fragile("sh", marked))


def hosts(whole: Whole, lb: lbclient.LoadBalancer) -> set[str]:
    """Hosts of the membership in force, once checked whole (see the root conftest)."""
    return {instance.host for instance in whole(lb.service("orders")).values()}


def rejected_at(lb: lbclient.LoadBalancer, size: int) -> bool:
    return f"of {size} instance(s)" in (lb.stats("orders")["registry_error"] or "")


def change(dnsmasq: DnsmasqServer, *addresses: str) -> None:
    dnsmasq.write_addn_hosts({NAME: list(addresses)})
    dnsmasq.reload()


def test_sync_watch_keeps_the_last_good_state_and_converges(
    fragile_scheduler: Callable[..., Any], whole: Whole
) -> None:
    def wait(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, "never converged"
            time.sleep(0.02)

    with (
        DnsmasqServer(addn_hosts={NAME: ["127.0.0.1", "127.0.0.2"]}) as dnsmasq,
        balancer(dnsmasq, fragile_scheduler) as lb,
    ):
        assert hosts(whole, lb) == {"127.0.0.1", "127.0.0.2"}
        change(dnsmasq, "127.0.0.2", "127.0.0.66")
        wait(lambda: rejected_at(lb, 2))
        assert "OverflowError" in lb.stats("orders")["registry_error"]
        assert hosts(whole, lb) == {"127.0.0.1", "127.0.0.2"}
        change(dnsmasq, "127.0.0.2", "127.0.0.3")
        wait(lambda: hosts(whole, lb) == {"127.0.0.2", "127.0.0.3"})
        assert lb.stats("orders")["registry_error"] is None


async def test_async_watch_keeps_the_last_good_state_and_converges(
    fragile_scheduler: Callable[..., Any], whole: Whole
) -> None:
    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, "never converged"
            await asyncio.sleep(0.02)

    with DnsmasqServer(addn_hosts={NAME: ["127.0.0.1", "127.0.0.2"]}) as dnsmasq:
        async with balancer(dnsmasq, fragile_scheduler) as lb:
            await lb.apick("orders")
            assert hosts(whole, lb) == {"127.0.0.1", "127.0.0.2"}
            change(dnsmasq, "127.0.0.2", "127.0.0.66")
            await until(lambda: rejected_at(lb, 2))
            assert hosts(whole, lb) == {"127.0.0.1", "127.0.0.2"}
            change(dnsmasq, "127.0.0.2", "127.0.0.3")
            await until(lambda: hosts(whole, lb) == {"127.0.0.2", "127.0.0.3"})
            assert lb.stats("orders")["registry_error"] is None
