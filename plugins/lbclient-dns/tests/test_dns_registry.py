"""DnsSrvRegistry and DnsRegistry against a real dnsmasq on loopback."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from lbclient_dns import DnsRegistry, DnsSrvRegistry
from lbclient_dns.testing import DnsmasqServer, ServfailServer

import lbclient
from lbclient import RegistryUnavailable, ServiceNotFound
from lbclient.testing import HTTPBackend

pytestmark = pytest.mark.usefixtures("dnsmasq_path")  # root conftest: skip or fail without dnsmasq

ORDERS = "_http._tcp.orders.example"
FAST = "timeout=0.5&min_ttl=0.2&max_ttl=1"


def srv_registry(dnsmasq: DnsmasqServer) -> DnsSrvRegistry:
    registry = lbclient.registry_from_uri(
        f"dns+srv://_http._tcp.{{service}}.example?nameserver={dnsmasq.address}&{FAST}"
    )
    assert isinstance(registry, DnsSrvRegistry)
    return registry


def test_srv_lowest_priority_gets_all_traffic() -> None:
    with (
        HTTPBackend("a") as a,
        HTTPBackend("b") as b,
        HTTPBackend("backup") as backup,
        DnsmasqServer(
            srv={
                ORDERS: [
                    ("a.example", a.port, 10, 3),
                    ("b.example", b.port, 10, 1),
                    ("backup.example", backup.port, 20, 1),
                ]
            },
            hosts={
                "a.example": ["127.0.0.1"],
                "b.example": ["127.0.0.1"],
                "backup.example": ["127.0.0.1"],
            },
        ) as dnsmasq,
    ):
        registry = srv_registry(dnsmasq)
        instances = registry.resolve("orders")
        assert {(i.port, i.weight) for i in instances} == {(a.port, 3.0), (b.port, 1.0)}
        with (
            lbclient.LoadBalancer(registry, scheduler="weighted_round_robin") as lb,
            httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client,
        ):
            for _ in range(40):
                assert client.get("http://orders/x").status_code == 200
        assert backup.requests == 0
        assert a.requests > b.requests > 0


def test_unknown_names_and_fixed_name_uris() -> None:
    with DnsmasqServer(
        srv={ORDERS: [("a.example", 8001, 1, 1)]}, hosts={"a.example": ["127.0.0.1"]}
    ) as dnsmasq:
        with pytest.raises(ServiceNotFound, match="NXDOMAIN"):
            srv_registry(dnsmasq).resolve("nope")
        fixed = lbclient.registry_from_uri(f"dns+srv://{ORDERS}?nameserver={dnsmasq.address}")
        assert [i.port for i in fixed.resolve("orders")] == [8001]
        with pytest.raises(ServiceNotFound, match=r"write \{service\} in the name"):
            fixed.resolve("payments")
        plain = lbclient.registry_from_uri(f"dns://a.example:9000?nameserver={dnsmasq.address}")
        assert isinstance(plain, DnsRegistry)
        assert [i.address for i in plain.resolve("a")] == ["127.0.0.1:9000"]
        with pytest.raises(ServiceNotFound, match="NXDOMAIN"):
            DnsRegistry("nope.example", 80, nameservers=[dnsmasq.address]).resolve("nope")


def test_watch_follows_changed_srv_records_after_restart(recorder: Any) -> None:
    with DnsmasqServer(
        srv={ORDERS: [("a.example", 8001, 1, 1), ("b.example", 8002, 1, 1)]},
        hosts={"a.example": ["127.0.0.1"], "b.example": ["127.0.0.2"]},
    ) as dnsmasq:
        registry = srv_registry(dnsmasq)
        subscription = registry.watch("orders", recorder)
        try:
            recorder.wait_for(lambda: recorder.ports == {8001, 8002})
            dnsmasq.srv[ORDERS] = [("b.example", 8002, 1, 1), ("c.example", 8003, 1, 1)]
            dnsmasq.hosts["c.example"] = ["127.0.0.3"]
            dnsmasq.restart()  # SIGHUP does not re-read srv-host lines
            recorder.wait_for(lambda: recorder.ports == {8002, 8003})
        finally:
            subscription.close()


def test_a_mode_follows_hosts_file_reloaded_by_sighup(recorder: Any) -> None:
    with DnsmasqServer(addn_hosts={"orders.svc.example": ["127.0.0.1", "127.0.0.2"]}) as dnsmasq:
        registry = lbclient.registry_from_uri(
            f"dns://{{service}}.svc.example:8080?nameserver={dnsmasq.address}&{FAST}"
        )
        subscription = registry.watch("orders", recorder)
        try:
            hosts = lambda: {i.host for i in recorder.published[-1]}  # noqa: E731
            recorder.wait_for(lambda: recorder.published and hosts() == {"127.0.0.1", "127.0.0.2"})
            dnsmasq.write_addn_hosts({"orders.svc.example": ["127.0.0.2", "127.0.0.3"]})
            dnsmasq.reload()
            recorder.wait_for(lambda: hosts() == {"127.0.0.2", "127.0.0.3"})
        finally:
            subscription.close()


@pytest.mark.parametrize("failure", ["nxdomain", "servfail", "timeout", "server down"])
def test_watch_keeps_last_good_list_and_logs_clearly(
    failure: str, recorder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "lbclient.registry")
    good = {ORDERS: [("a.example", 8001, 1, 1)]}
    with (
        ServfailServer() as servfail,
        DnsmasqServer(srv=good, hosts={"a.example": ["127.0.0.1"]}) as dnsmasq,
    ):
        subscription = srv_registry(dnsmasq).watch("orders", recorder)
        try:
            recorder.wait_for(lambda: recorder.ports == {8001})
            if failure == "server down":
                dnsmasq.stop()
            else:
                dnsmasq.srv = {}
                if failure != "nxdomain":
                    upstream = servfail.upstream if failure == "servfail" else "127.0.0.1#1"
                    dnsmasq.forward = {"orders.example": upstream}
                dnsmasq.restart()
            recorder.wait_for(lambda: len(recorder.errors) >= 2)
            assert recorder.ports == {8001}  # nothing but the last good list was published
            expected = {
                "nxdomain": "does not exist (NXDOMAIN)",
                "servfail": "failed to answer (SERVFAIL)",
                "timeout": "(timeout)",
                "server down": "(timeout)",
            }[failure]
            assert "keeping the last good list" in caplog.text
            assert expected in caplog.text
            dnsmasq.srv, dnsmasq.forward = good, {}
            dnsmasq.restart()
            published = len(recorder.published)
            recorder.wait_for(lambda: len(recorder.published) > published)
            assert recorder.ports == {8001}
            assert "reachable again" in caplog.text
        finally:
            subscription.close()


def test_first_resolve_failures_are_lbclient_errors() -> None:
    with (
        ServfailServer() as servfail,
        DnsmasqServer(forward={"broken.example": servfail.upstream}) as dnsmasq,
    ):
        with pytest.raises(RegistryUnavailable, match="SERVFAIL"):
            srv_registry(dnsmasq).resolve("x.broken")
        with (
            lbclient.LoadBalancer(srv_registry(dnsmasq)) as lb,
            pytest.raises(ServiceNotFound),
        ):
            lb.pick("missing")


async def test_async_resolve_and_watch() -> None:
    with (
        HTTPBackend("a") as a,
        HTTPBackend("b") as b,
        DnsmasqServer(
            srv={ORDERS: [("a.example", a.port, 1, 1)]}, hosts={"a.example": ["127.0.0.1"]}
        ) as dnsmasq,
    ):
        registry = srv_registry(dnsmasq)
        assert [i.port for i in await registry.aresolve("orders")] == [a.port]
        async with (
            lbclient.LoadBalancer(registry) as lb,
            httpx.AsyncClient(transport=lbclient.AsyncLoadBalancedTransport(lb)) as client,
        ):
            assert (await client.get("http://orders/x")).status_code == 200
            dnsmasq.srv[ORDERS] = [("a.example", b.port, 1, 1)]
            dnsmasq.restart()
            for _ in range(300):  # the watch task on this loop picks up the new port
                if b.requests:
                    break
                await client.get("http://orders/x")
                await asyncio.sleep(0.05)
            assert b.requests


def test_srv_failover_by_priority_level_spills_by_health() -> None:
    """``failover=priority``: every SRV priority is a level; when the lowest loses half its
    instances (outlier ejection), Envoy's overprovisioning sends 30% to the backup."""
    with (
        HTTPBackend("a") as a,
        HTTPBackend("b") as b,
        HTTPBackend("backup") as backup,
        DnsmasqServer(
            srv={
                ORDERS: [
                    ("a.example", a.port, 10, 1),
                    ("b.example", b.port, 10, 1),
                    ("backup.example", backup.port, 20, 1),
                ]
            },
            hosts={h: ["127.0.0.1"] for h in ("a.example", "b.example", "backup.example")},
        ) as dnsmasq,
    ):
        registry = lbclient.registry_from_uri(
            f"dns+srv://_http._tcp.{{service}}.example?nameserver={dnsmasq.address}&{FAST}"
            "&failover=priority"
        )
        assert {i.port: i.priority for i in registry.resolve("orders")} == {
            a.port: 0,
            b.port: 0,
            backup.port: 1,
        }
        outlier = lbclient.OutlierDetection(consecutive_5xx=1, max_ejection_percent=100)
        with (
            lbclient.LoadBalancer(registry, outlier=outlier) as lb,
            httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client,
        ):
            for _ in range(20):
                assert client.get("http://orders/x").status_code == 200
            assert backup.requests == 0
            b.status = 503  # ejected at its first 503 (the request is retried elsewhere)
            for _ in range(2):
                client.get("http://orders/x")
            assert lb.stats("orders")["priority_loads"] == {0: 70, 1: 30}
            before = backup.requests
            for _ in range(100):
                assert client.get("http://orders/x").status_code == 200
            assert backup.requests - before == 30


def test_srv_failover_setting_is_checked() -> None:
    with pytest.raises(lbclient.ConfigurationError, match="failover='nearest'"):
        DnsSrvRegistry(ORDERS, failover="nearest")  # type: ignore[arg-type]
    with pytest.raises(lbclient.ConfigurationError, match="did you mean 'failover'"):
        DnsSrvRegistry(ORDERS, failovr="priority")  # type: ignore[call-arg]
