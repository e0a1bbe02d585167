"""ConsulRegistry through real py-consul against ConsulTestServer, sync and async."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import consul
import httpx
import pytest
from consul_helpers import lbclient_threads, register, wait_until

import lbclient
from lbclient.consul import ConsulRegistry
from lbclient.consul._health import HealthQuery
from lbclient.testing.consul import ConsulTestServer

log = logging.getLogger("tests.consul")


class Recorder(lbclient.LoadBalancerListener):
    """Every usable list the balancer published, to prove none was ever empty."""

    def __init__(self) -> None:
        self.lists: list[list[str]] = []

    def on_instances(self, service: str, instances: Sequence[lbclient.ServiceInstance]) -> None:
        self.lists.append(sorted(i.id for i in instances))


def ids(instances: Sequence[lbclient.ServiceInstance]) -> list[str]:
    return sorted(i.id for i in instances)


def current(lb: lbclient.LoadBalancer) -> list[str]:
    in_use = lb.stats()  # without resolving "orders" when it is not in use yet
    return sorted(row["id"] for row in in_use.get("orders", {}).get("instances", []))


def test_entries_map_to_instances(server, agent):
    agent.agent.service.register("orders", service_id="plain", port=8001)  # no address, no check
    agent.agent.service.register(
        "orders", service_id="warn", address="10.0.0.2", port=8002, tags=["v2"],
        meta={"zone": "svc-zone", "scheme": "https"}, weights={"Passing": 10, "Warning": 2},
        check={"TTL": "60s", "Status": "warning", "CheckID": "w"},
    )  # fmt: skip
    agent.agent.service.register(
        "orders", service_id="dead", port=8003, check={"TTL": "60s", "Status": "critical"}
    )
    registry = ConsulRegistry(port=server.port)
    instances = {i.id: i for i in registry.resolve("orders")}
    assert sorted(instances) == ["plain", "warn"]  # critical dropped
    plain, warn = instances["plain"], instances["warn"]
    assert plain.host == "127.0.0.1"  # Service.Address "" → Node.Address
    assert plain.zone == "node-zone"  # from Node.Meta
    assert plain.weight == 1.0
    assert warn.host == "10.0.0.2"
    assert warn.weight == 2.0  # kept at its warning weight
    assert warn.zone == "svc-zone"  # Service.Meta wins over Node.Meta
    assert warn.tags == frozenset({"v2"})
    assert warn.scheme == "https"
    assert warn.metadata["consul.health"] == "warning"
    assert warn.metadata["consul.checks"] == "w=warning"
    strict = ConsulRegistry(port=server.port, passing_only=True, zone_key="rack")
    (only,) = strict.resolve("orders")
    assert (only.id, only.zone) == ("plain", "r1")
    tagged = ConsulRegistry(port=server.port, tags=["V2"])  # Consul matches tags ignoring case
    assert ids(tagged.resolve("orders")) == ["warn"]
    filtered = ConsulRegistry(port=server.port, filter='Service.ID == "plain"')
    assert ids(filtered.resolve("orders")) == ["plain"]
    elsewhere = ConsulRegistry(port=server.port, node_meta={"rack": "r2"})
    assert elsewhere.resolve("orders") == ()  # known service, no node matches
    wrong_dc = ConsulRegistry(port=server.port, dc="dc9")
    with pytest.raises(lbclient.ConfigurationError, match="datacenter"):
        wrong_dc.resolve("orders")
    for each in (registry, strict, tagged, filtered, elsewhere, wrong_dc):
        each.close()


def test_unknown_service_is_not_found_but_a_known_empty_one_is_empty(server, agent):
    agent.agent.service.register("orders", service_id="o1", port=1, check={"TTL": "60s"})
    registry = ConsulRegistry(port=server.port)
    assert registry.resolve("orders") == ()  # known, its only instance is critical
    with pytest.raises(lbclient.ServiceNotFound, match="no service 'nobody'"):
        registry.resolve("nobody")
    with pytest.raises(lbclient.ServiceNotFound):
        asyncio.run(registry.aresolve("nobody"))
    registry.close()


def test_index_rules_reset_backwards_never_below_one_unchanged_is_none():
    query = HealthQuery()
    assert query.read("s", ("7", []), None) == ((), 7)
    assert query.read("s", ("7", []), 7) == (None, 7)  # the wait ran out
    assert query.read("s", ("3", []), 7) == ((), None)  # backwards: fresh read next
    assert query.read("s", ("0", []), None) == ((), 1)  # never below 1
    with pytest.raises(lbclient.RegistryUnavailable, match="malformed"):
        query.read("s", ("x", []), None)
    with pytest.raises(lbclient.RegistryUnavailable, match="malformed"):
        query.read("s", ("8", [{"Service": {}}]), None)


def test_uri_and_environment(monkeypatch):
    registry = lbclient.registry_from_uri("consul://127.0.0.1:8600?tag=v2&tag=eu&dc=dc1")
    assert isinstance(registry, ConsulRegistry)
    assert (registry.settings.port, registry.query.tags, registry.query.dc) == (
        8600, ("v2", "eu"), "dc1",
    )  # fmt: skip
    with pytest.raises(lbclient.ConfigurationError, match="CONSUL_HTTP_TOKEN"):
        ConsulRegistry.from_uri(urlsplit("consul://127.0.0.1:8500?token=s3cret"))
    with pytest.raises(lbclient.ConfigurationError, match="unknown consul:// option"):
        ConsulRegistry.from_uri(urlsplit("consul://127.0.0.1:8500?tags=v2"))
    monkeypatch.setenv("MY_TOKEN", "s3cret")
    from_env = ConsulRegistry.from_uri(urlsplit("consul://h:1?token_env=MY_TOKEN"))
    assert from_env.settings.token == "s3cret"
    assert "s3cret" not in repr(from_env) + repr(from_env.settings)
    environ = {
        "CONSUL_HTTP_ADDR": "https://consul.example:8501",
        "CONSUL_HTTP_TOKEN": "t0k",
        "CONSUL_HTTP_SSL_VERIFY": "false",
    }
    settings = ConsulRegistry(environ=environ).settings
    assert (settings.scheme, settings.host, settings.port) == ("https", "consul.example", 8501)
    assert (settings.token, settings.verify) == ("t0k", False)
    assert ConsulRegistry(port=1, token="mine", environ=environ).settings.token == "mine"


def test_wrong_token_is_a_clear_access_denied_sync_and_async():
    with ConsulTestServer(acl_tokens={"good": "read"}) as srv:
        registry = ConsulRegistry(port=srv.port, token="s3cret-but-wrong")
        with pytest.raises(lbclient.RegistryAccessDenied) as caught:
            registry.resolve("orders")
        message = str(caught.value)
        assert "'service:read' on 'orders'" in message
        assert "ACL not found" in message
        assert "s3cret" not in message
        with pytest.raises(lbclient.RegistryAccessDenied, match="service:read"):
            lbclient.LoadBalancer(registry).pick("orders")
        with pytest.raises(lbclient.RegistryAccessDenied):
            asyncio.run(registry.aresolve("orders"))
        registry.close()


def drive_traffic(client: httpx.Client, stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        seen.append(client.get("http://orders/").json()["backend"])


def settle(seen: list[str]) -> None:
    """Let the one worker finish the request it had in flight when the list changed (it may
    still reach the removed instance) and one more, picked from the new list."""
    done = len(seen)
    wait_until(lambda: len(seen) >= done + 2)


def test_traffic_follows_registration_deregistration_and_ttl_lapse(server, agent, backends):
    a, b = backends
    register(agent, a)
    register(agent, b, check={"TTL": "300ms"})
    beating = threading.Event()
    beating.set()

    def heartbeat() -> None:  # b's own heartbeat, until the test silences it
        while beating.is_set():
            agent.agent.check.ttl_pass("service:b")
            time.sleep(0.05)

    beater = threading.Thread(target=heartbeat)
    beater.start()
    lb = lbclient.LoadBalancer(ConsulRegistry(port=server.port))
    client = httpx.Client(transport=lbclient.LoadBalancedTransport(lb))
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    worker = threading.Thread(target=drive_traffic, args=(client, stop, seen))
    worker.start()
    try:
        wait_until(lambda: {"a", "b"} <= set(seen))
        beating.clear()
        beater.join()
        # b's TTL lapses (nobody passes it): Consul marks it critical, the watch drops it
        lapse = wait_until(lambda: current(lb) == ["a"])
        log.warning("TTL lapse → instance dropped by the watch after %.3f s", lapse)
        settle(seen)
        b_requests = b.requests
        time.sleep(0.2)
        assert b.requests == b_requests  # no new request reached b
        register(agent, b)
        wait_until(lambda: current(lb) == ["a", "b"])
        started = time.monotonic()
        agent.agent.service.deregister("b")
        wait_until(lambda: current(lb) == ["a"])
        delay = time.monotonic() - started
        print(f"consul deregistration propagated in {delay * 1000:.1f} ms")
        log.warning("deregistration → instance dropped after %.3f s", delay)
        settle(seen)
        b_requests = b.requests
        time.sleep(0.2)
        assert b.requests == b_requests
    finally:
        beating.clear()
        stop.set()
        worker.join()
        client.close()
        lb.close()
    assert lbclient_threads() == []  # the blocked watch was cut, not abandoned


async def test_async_traffic_follows_deregistration(server, agent, backends):
    a, b = backends
    register(agent, a)
    register(agent, b)
    async with lbclient.LoadBalancer(ConsulRegistry(port=server.port)) as lb:
        client = httpx.AsyncClient(transport=lbclient.AsyncLoadBalancedTransport(lb))
        seen = {(await client.get("http://orders/")).json()["backend"] for _ in range(6)}
        assert seen == {"a", "b"}
        assert any(t.get_name() == "lbclient-watch-consul:orders" for t in asyncio.all_tasks())
        started = time.monotonic()
        await asyncio.to_thread(agent.agent.service.deregister, "b")
        while current(lb) != ["a"]:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.005)
        print(f"async: deregistration propagated in {(time.monotonic() - started) * 1000:.1f} ms")
        before = b.requests
        for _ in range(5):
            assert (await client.get("http://orders/")).json()["backend"] == "a"
        assert b.requests == before
        await client.aclose()
    started = time.monotonic()
    while [t for t in asyncio.all_tasks() if t.get_name().startswith("lbclient-")]:
        assert time.monotonic() - started < 5, "the watch task survived close()"
        await asyncio.sleep(0.005)


def test_consul_restart_mid_traffic_fails_no_request(server, agent, backends):
    a, b = backends
    register(agent, a)
    register(agent, b)
    recorder = Recorder()
    lb = lbclient.LoadBalancer(
        ConsulRegistry(port=server.port, min_backoff=0.02, max_backoff=0.2), listeners=[recorder]
    )
    client = httpx.Client(transport=lbclient.LoadBalancedTransport(lb))
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    worker = threading.Thread(target=drive_traffic, args=(client, stop, seen))
    worker.start()
    try:
        wait_until(lambda: len(seen) > 20)
        server.down()
        wait_until(lambda: lb.stats("orders")["stale_seconds"] is not None)
        count = len(seen)
        wait_until(lambda: len(seen) > count + 20)  # traffic goes on from the last good list
        server.up()
        wait_until(lambda: lb.stats("orders")["stale_seconds"] is None)
        server.slow(0.2)  # a slow agent delays news, never requests
        agent.agent.service.deregister("a")  # and the watch follows changes again
        wait_until(lambda: current(lb) == ["b"])
        server.slow(0)
    finally:
        stop.set()
        worker.join()  # any failed request would have raised in the worker and stopped it
        client.close()
        lb.close()
    assert len(seen) > 40
    assert [] not in recorder.lists


def test_a_catalog_that_went_back_in_time_is_followed_after_the_index_goes_back(
    server, agent, backends, caplog
):
    a, b = backends
    register(agent, a)
    for _ in range(20):  # move the index well past where a fresh agent starts
        agent.agent.check.ttl_fail("service:a")
        agent.agent.check.ttl_pass("service:a")
    lb = lbclient.LoadBalancer(ConsulRegistry(port=server.port, wait="500ms"))
    assert current(lb) == []
    lb.service("orders")
    assert current(lb) == ["a"]
    reads = ("GET", "/v1/health/service/orders")
    wait_until(lambda: server.requests[reads] >= 2)  # resolve, then the watch blocks
    with caplog.at_level(logging.INFO, logger="lbclient.consul"):
        server.reset()  # a snapshot restore: same connections, older data, lower index
        register(agent, b)  # only b now, at an index below the watch's
        wait_until(lambda: current(lb) == ["b"])
    assert "index went backwards" in caplog.text
    lb.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_malformed_answers_keep_the_snapshot_and_the_watcher(server, agent, backends, mode, caplog):
    a, b = backends
    register(agent, a)
    recorder = Recorder()
    registry = ConsulRegistry(port=server.port, min_backoff=0.02, max_backoff=0.2)

    async def scenario() -> None:
        lb = lbclient.LoadBalancer(registry, listeners=[recorder])
        if mode == "async":
            await lb.aservice("orders")  # a watch task on this loop
        else:
            await asyncio.to_thread(lb.service, "orders")  # no loop there: a watch thread
        server.malformed_next(1)  # cut-off JSON
        await asyncio.to_thread(register, agent, b, name="orders")
        await wait_async(lambda: current(lb) == ["a", "b"])
        server.malformed_next(2, body=b'[{"Service": {"ID": "x"}}]')  # valid JSON, wrong shape
        await asyncio.to_thread(agent.agent.service.deregister, "b")
        await wait_async(lambda: current(lb) == ["a"])
        server.fail_next(2, 500)  # whoever asks next (the watch or the test) gets a 500
        while True:
            try:
                await asyncio.to_thread(register, agent, b, name="orders")
                break
            except consul.ConsulException:
                pass
        await wait_async(lambda: current(lb) == ["a", "b"])
        lb.close()

    async def wait_async(predicate: Any) -> None:
        started = time.monotonic()
        while not predicate():
            assert time.monotonic() - started < 10, "the watcher never recovered"
            await asyncio.sleep(0.005)

    with caplog.at_level(logging.INFO, logger="lbclient"):
        asyncio.run(scenario())
    assert "malformed" in caplog.text
    assert [] not in recorder.lists  # the last good list was never replaced by nothing
    assert "a" in recorder.lists[-1]


def test_close_stops_sync_watches_promptly(server, agent, backends):
    register(agent, backends[0])
    lb = lbclient.LoadBalancer(ConsulRegistry(port=server.port, wait="5m"))
    lb.pick("orders").__exit__(None, None, None)
    wait_until(lambda: lbclient_threads() != [])
    lb.close()
    assert lbclient_threads() == []
