"""EtcdRegistry and the registrars against a real etcd on loopback."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from lbclient_etcd import AsyncEtcdRegistrar, EtcdRegistrar, EtcdRegistry
from lbclient_etcd.testing import EtcdServer

import lbclient
from lbclient import (
    RegistryUnavailable,
    ServiceInstance,
    ServiceNotFound,
)
from lbclient.testing import HTTPBackend, free_port


def _instance(service: str, backend: HTTPBackend, **kw: object) -> ServiceInstance:
    return ServiceInstance(service, backend.host, backend.port, **kw)  # type: ignore[arg-type]


def test_resolve_sees_registered_instances_and_revoke_removes_them(etcd: EtcdServer) -> None:
    registry = EtcdRegistry(etcd.url)
    me = ServiceInstance("inventory", "127.0.0.1", 9001, zone="eu-1", tags={"v2"})
    with pytest.raises(ServiceNotFound, match="EtcdRegistrar"):
        registry.resolve("inventory")
    with EtcdRegistrar(registry, me, ttl=5):
        assert registry.resolve("inventory") == (me,)
    with pytest.raises(ServiceNotFound):
        registry.resolve("inventory")  # revoked on close, no waiting for the TTL
    registry.close()


def test_unreachable_etcd_is_registry_unavailable() -> None:
    registry = EtcdRegistry(f"http://127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(RegistryUnavailable, match="check that etcd is running"):
        registry.resolve("orders")
    with pytest.raises(RegistryUnavailable):
        EtcdRegistrar(registry, ServiceInstance("orders", "h", 1), ttl=2).start()


def test_uri_through_the_entry_point_and_failover_between_endpoints(etcd: EtcdServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    registry = lbclient.registry_from_uri(f"etcd://{dead},127.0.0.1:{etcd.client_port}/apps")
    assert isinstance(registry, EtcdRegistry)
    assert registry.prefix == "/apps"
    with EtcdRegistrar(registry, ServiceInstance("billing", "127.0.0.1", 9002), ttl=5):
        assert [i.port for i in registry.resolve("billing")] == [9002]
    registry.close()


def test_killed_registrar_process_loses_its_instance_and_its_traffic(
    etcd: EtcdServer, registrar_process: object
) -> None:
    start = registrar_process
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        doomed = start(etcd.uri, "orders", a.port, 2)  # type: ignore[operator]
        start(etcd.uri, "orders", b.port, 2)  # type: ignore[operator]
        with (
            lbclient.LoadBalancer(EtcdRegistry(etcd.url)) as lb,
            httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client,
        ):
            for _ in range(10):
                assert client.get("http://orders/x").status_code == 200
            assert a.requests
            assert b.requests
            doomed.kill()  # SIGKILL: no revoke, the lease must expire on its own
            state = lb.service("orders")
            _wait(lambda: len(state.endpoints) == 1, "the lease to expire")
            before = a.requests
            for _ in range(20):
                assert client.get("http://orders/x").status_code == 200
            assert a.requests == before
        # close() stopped the watch thread at once, even though it was blocked reading.
        assert not [t for t in threading.enumerate() if t.name.startswith("lbclient-watch")]


def test_watch_rereads_when_its_revision_was_compacted(
    etcd: EtcdServer, sink: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", "lbclient.etcd")
    registry = EtcdRegistry(etcd.url)
    services = [ServiceInstance("search", "127.0.0.1", 9100 + n, id=f"s{n}") for n in range(4)]
    first = EtcdRegistrar(registry, services[0], ttl=5).start()
    subscription = registry.watch("search", sink)  # type: ignore[arg-type]
    try:
        sink.wait_for(lambda: sink.ports == {9100})  # type: ignore[attr-defined]
        sink.gate.clear()  # type: ignore[attr-defined]  # hold the watch inside publish()
        second = EtcdRegistrar(registry, services[1], ttl=5).start()
        assert sink.held.wait(20)  # type: ignore[attr-defined]  # it saw s1, and only s1
        # The watch saw s1 and is stuck publishing it; meanwhile history moves on and is
        # compacted, so its next watch (from the revision after s1) must be refused.
        third = EtcdRegistrar(registry, services[2], ttl=5).start()
        fourth = EtcdRegistrar(registry, services[3], ttl=5).start()
        fourth.close()
        revision = etcd.call("/v3/kv/range", {"key": "AA=="})["header"]["revision"]  # type: ignore[index]
        etcd.call("/v3/kv/compaction", {"revision": revision, "physical": True})
        sink.gate.set()  # type: ignore[attr-defined]
        sink.wait_for(lambda: sink.ports == {9100, 9101, 9102})  # type: ignore[attr-defined]
        assert "was compacted" in caplog.text
        for registrar in (first, second, third):
            registrar.close()
        sink.wait_for(lambda: sink.ports == set())  # type: ignore[attr-defined]
    finally:
        subscription.close()
        registry.close()


def test_etcd_restart_mid_traffic_fails_no_request(own_etcd: EtcdServer) -> None:
    registry = EtcdRegistry(own_etcd.url, min_backoff=0.05, max_backoff=0.5)
    with HTTPBackend("a") as a, HTTPBackend("b") as b, HTTPBackend("c") as c:
        registrars = [EtcdRegistrar(registry, _instance("pay", x), ttl=3).start() for x in (a, b)]
        statuses: list[int] = []
        errors: list[BaseException] = []
        stop = threading.Event()
        with (
            lbclient.LoadBalancer(registry) as lb,
            httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client,
        ):

            def traffic() -> None:
                while not stop.is_set():
                    try:
                        statuses.append(client.get("http://pay/x").status_code)
                    except Exception as exc:  # any failure is a test failure
                        errors.append(exc)

            worker = threading.Thread(target=traffic)
            worker.start()
            try:
                _wait(lambda: len(statuses) > 20, "traffic")
                own_etcd.kill()
                served = len(statuses)
                _wait(lambda: len(statuses) > served + 20, "traffic while etcd is down")
                own_etcd.start()
                # The watch recovers: a new instance registered after the restart shows up.
                with EtcdRegistrar(registry, _instance("pay", c), ttl=3):
                    _wait(lambda: c.requests > 0, "traffic to the instance added after restart")
            finally:
                stop.set()
                worker.join()
        for registrar in registrars:
            registrar.close()
    assert errors == []
    assert set(statuses) == {200}
    assert a.requests
    assert b.requests


async def test_async_registrar_resolve_and_watch(etcd: EtcdServer) -> None:
    registry = EtcdRegistry(etcd.url)
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        async with AsyncEtcdRegistrar(etcd.uri, _instance("cart", a), ttl=3):
            assert [i.port for i in await registry.aresolve("cart")] == [a.port]
            async with (
                lbclient.LoadBalancer(registry) as lb,
                httpx.AsyncClient(transport=lbclient.AsyncLoadBalancedTransport(lb)) as client,
            ):
                assert (await client.get("http://cart/x")).status_code == 200
                async with AsyncEtcdRegistrar(registry, _instance("cart", b), ttl=3):
                    for _ in range(200):  # the watch task runs on this loop
                        if b.requests:
                            break
                        await client.get("http://cart/x")
                        await asyncio.sleep(0.02)
                    assert b.requests
    registry.close()


def _wait(predicate: object, what: str, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_watch_reopens_after_watch_timeout_without_losing_changes(
    etcd: EtcdServer, sink: object
) -> None:
    registry = EtcdRegistry(etcd.url, watch_timeout=0.2)
    first = EtcdRegistrar(registry, ServiceInstance("quiet", "127.0.0.1", 9201), ttl=5).start()
    subscription = registry.watch("quiet", sink)  # type: ignore[arg-type]
    try:
        sink.wait_for(lambda: sink.ports == {9201})  # type: ignore[attr-defined]
        threading.Event().wait(0.7)  # a few silent watch timeouts, each reopening the stream
        with EtcdRegistrar(registry, ServiceInstance("quiet", "127.0.0.1", 9202), ttl=5):
            sink.wait_for(lambda: sink.ports == {9201, 9202})  # type: ignore[attr-defined]
        sink.wait_for(lambda: sink.ports == {9201})  # type: ignore[attr-defined]
        assert sink.errors == []  # type: ignore[attr-defined]  # timeouts are not failures
    finally:
        subscription.close()
        first.close()
        registry.close()


def test_registrar_registers_again_when_its_lease_is_lost(etcd: EtcdServer, sink: object) -> None:
    registry = EtcdRegistry(etcd.url)
    me = ServiceInstance("phoenix", "127.0.0.1", 9301)
    with EtcdRegistrar(registry, me, ttl=3) as registrar:
        subscription = registry.watch("phoenix", sink)  # type: ignore[arg-type]
        try:
            sink.wait_for(lambda: sink.ports == {9301})  # type: ignore[attr-defined]
            lost = registrar.core.lease
            # What a long pause (or etcd down for longer than the TTL) looks like.
            etcd.call("/v3/lease/revoke", {"ID": str(lost)})
            sink.wait_for(lambda: sink.ports == set())  # type: ignore[attr-defined]
            sink.wait_for(lambda: sink.ports == {9301})  # type: ignore[attr-defined]
            assert registrar.core.lease not in (None, lost)
        finally:
            subscription.close()
    registry.close()
