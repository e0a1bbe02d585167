"""KubernetesRegistry through the real ``kubernetes`` client against the test server, sync."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from k8s_support import NS, TOKEN, wait_for

import lbclient
from lbclient import (
    ConfigurationError,
    LoadBalancedTransport,
    LoadBalancer,
    NoAvailableInstance,
    RegistryAccessDenied,
    ServiceNotFound,
    registry_from_uri,
)
from lbclient.kubernetes import KubernetesRegistry
from lbclient.registry._loop import SharedLoop
from lbclient.testing import HTTPBackend
from lbclient.testing.kubernetes import KubernetesTestServer


def registry(configuration: Any, **options: Any) -> KubernetesRegistry:
    options.setdefault("min_backoff", 0.02)
    options.setdefault("max_backoff", 0.2)
    return KubernetesRegistry(NS, port="http", configuration=configuration, **options)


@pytest.fixture
def lb(configuration: Any) -> Iterator[LoadBalancer]:
    balancer = LoadBalancer(registry(configuration))
    yield balancer
    balancer.close()


@pytest.fixture
def client(lb: LoadBalancer) -> Iterator[httpx.Client]:
    with httpx.Client(transport=LoadBalancedTransport(lb)) as c:
        yield c


def usable(lb: LoadBalancer, service: str = "orders") -> set[str]:
    return {e.instance.address for e in lb.service(service).usable}


def spread(client: httpx.Client, n: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _ in range(n):
        response = client.get("http://orders/x")
        assert response.status_code == 200
        name = response.json()["backend"]
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_scale_up_new_pods_get_traffic(
    api: KubernetesTestServer, backends: list[HTTPBackend], lb: LoadBalancer, client: httpx.Client
) -> None:
    api.scale(NS, "orders", [b.address for b in backends[:2]])
    assert set(spread(client, 10)) == {"a", "b"}
    api.scale(NS, "orders", [b.address for b in backends])
    delay = wait_for(lambda: len(usable(lb)) == 5)
    print(f"\nscale-up propagation: {delay * 1000:.1f} ms")
    assert set(spread(client, 25)) == {"a", "b", "c", "d", "e"}


@pytest.mark.parametrize("how", ["scale_down", "terminating", "not_ready"])
def test_removed_pods_get_no_new_requests_after_propagation(
    api: KubernetesTestServer,
    backends: list[HTTPBackend],
    lb: LoadBalancer,
    client: httpx.Client,
    how: str,
) -> None:
    api.scale(NS, "orders", [b.address for b in backends[:3]])
    spread(client, 6)
    gone = backends[2]
    changed = time.monotonic()
    if how == "scale_down":
        api.scale(NS, "orders", [b.address for b in backends[:2]])
    elif how == "terminating":
        api.set_conditions(NS, "orders", gone.address, terminating=True)
    else:
        api.set_conditions(NS, "orders", gone.address, ready=False)
    wait_for(lambda: gone.address not in usable(lb))
    delay = time.monotonic() - changed
    print(f"\n{how} propagation: {delay * 1000:.1f} ms (target < 1000 ms)")
    before = gone.requests
    assert set(spread(client, 20)) == {"a", "b"}
    assert gone.requests == before


def test_terminating_pods_are_a_last_resort_when_asked(
    api: KubernetesTestServer, backends: list[HTTPBackend], configuration: Any
) -> None:
    api.scale(NS, "orders", [b.address for b in backends[:2]])
    with LoadBalancer(registry(configuration, fallback_to_terminating=True)) as lb:
        assert len(usable(lb)) == 2
        api.set_conditions(NS, "orders", backends[0].address, terminating=True)
        wait_for(lambda: usable(lb) == {backends[1].address})
        api.set_conditions(NS, "orders", backends[1].address, terminating=True)
        # Nothing is ready: both draining pods are used rather than failing every request.
        wait_for(lambda: len(usable(lb)) == 2)
        assert all(e.instance.metadata["terminating"] for e in lb.service("orders").usable)


def test_several_slices_are_merged_with_zone_and_node(
    api: KubernetesTestServer, backends: list[HTTPBackend], lb: LoadBalancer
) -> None:
    for i, backend in enumerate(backends[:3]):
        api.apply_slice(
            NS,
            "orders",
            f"orders-{i}",
            endpoints=[
                lbclient.testing.kubernetes.endpoint(
                    backend.host, zone=f"z{i}", node=f"n{i}", pod=f"orders-{i}"
                )
            ],
            ports=[{"name": "http", "port": backend.port}],
        )
    api.apply_slice(NS, "orders", "orders-empty", endpoints=None, ports=None)
    state = lb.service("orders")
    assert {e.instance.address for e in state.usable} == {b.address for b in backends[:3]}
    assert {(e.instance.zone, e.instance.metadata["node"]) for e in state.usable} == {
        ("z0", "n0"),
        ("z1", "n1"),
        ("z2", "n2"),
    }
    api.delete_slice(NS, "orders-1")
    wait_for(lambda: backends[1].address not in usable(lb))
    assert len(state.endpoints) == 2


def test_a_closed_stream_resumes_from_the_last_version_without_a_list(
    api: KubernetesTestServer, backends: list[HTTPBackend], lb: LoadBalancer
) -> None:
    api.scale(NS, "orders", [b.address for b in backends[:2]])
    assert len(usable(lb)) == 2
    api.scale(NS, "orders", [b.address for b in backends[:3]])
    wait_for(lambda: len(usable(lb)) == 3)
    (added,) = [
        s for s in api.slices(NS, "orders") if s["metadata"]["name"].endswith(str(backends[2].port))
    ]
    wait_for(lambda: api.open_watches == 1)  # the client's next watch is being served
    lists, watches = len(api.list_requests()), len(api.watch_requests())
    api.close_watches()  # as a server does after its 30-60 minute watch timeout
    wait_for(lambda: len(api.watch_requests()) > watches)
    resumed = api.watch_requests()[-1]
    assert int(resumed["resourceVersion"]) >= int(added["metadata"]["resourceVersion"])
    assert resumed["allowWatchBookmarks"] == "true"
    assert len(api.list_requests()) == lists
    api.scale(NS, "orders", [b.address for b in backends[:4]])
    wait_for(lambda: len(usable(lb)) == 4)


@pytest.mark.parametrize("variant", ["error_event", "http_410"])
def test_history_compacted_while_watching_relists_without_losing_or_duplicating(
    api: KubernetesTestServer, backends: list[HTTPBackend], lb: LoadBalancer, variant: str
) -> None:
    api.expired_as_http_410 = variant == "http_410"
    api.scale(NS, "orders", [b.address for b in backends[:3]])
    assert len(usable(lb)) == 3
    wait_for(lambda: api.open_watches == 1)  # the watch after the list is being served
    lists_before = len(api.list_requests())
    watches_before = len(api.watch_requests())
    with api.watches_held():
        api.close_watches()  # the client reconnects from its version...
        wait_for(lambda: len(api.watch_requests()) > watches_before)
        # ...which expires while the reconnect waits: changes, then compaction.
        api.scale(NS, "orders", [b.address for b in (backends[0], backends[3], backends[4])])
        api.compact()
    wait_for(lambda: usable(lb) == {backends[0].address, backends[3].address, backends[4].address})
    state = lb.service("orders")
    assert api.expired_watches >= 1
    assert len(api.list_requests()) > lists_before  # it listed again
    assert sorted(state.endpoints) == sorted(
        b.address for b in (backends[0], backends[3], backends[4])
    )


def test_api_server_restart_mid_traffic_fails_no_request(
    api: KubernetesTestServer, backends: list[HTTPBackend], lb: LoadBalancer, client: httpx.Client
) -> None:
    api.scale(NS, "orders", [b.address for b in backends[:2]])
    spread(client, 4)
    failures: list[BaseException] = []
    done = threading.Event()
    sent = [0]

    def traffic() -> None:
        while not done.is_set():
            try:
                response = client.get("http://orders/x")
                if response.status_code != 200:
                    failures.append(AssertionError(response.status_code))
            except Exception as exc:
                failures.append(exc)
            sent[0] += 1

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        api.down()
        wait_for(lambda: lb.service("orders").registry_error is not None)
        wait_for(lambda: sent[0] > 50)
        api.scale(NS, "orders", [b.address for b in backends[:3]])  # a change while down
        api.up()
        delay = wait_for(lambda: len(usable(lb)) == 3)
        print(f"\nrecovered {delay * 1000:.0f} ms after the API server came back")
    finally:
        done.set()
        worker.join()
    assert failures == []
    assert sent[0] > 50
    assert lb.service("orders").registry_error is None


def test_credentials_and_permissions_errors_name_the_fix(
    api: KubernetesTestServer, configuration: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    configuration.api_key = {"BearerToken": "wrong-token"}
    with (
        pytest.raises(RegistryAccessDenied, match="401"),
        LoadBalancer(registry(configuration)) as lb,
    ):
        lb.pick("orders")
    configuration.api_key = {"BearerToken": TOKEN}
    api.forbid(NS)
    with LoadBalancer(registry(configuration)) as lb:
        with pytest.raises(RegistryAccessDenied) as denied:
            lb.pick("orders")
        assert "list and watch on endpointslices.discovery.k8s.io" in str(denied.value)
        assert "'shop'" in str(denied.value)
    assert TOKEN not in caplog.text
    assert "wrong-token" not in caplog.text
    assert TOKEN not in repr(registry(configuration))


def test_service_names_unknown_services_and_passthrough(
    api: KubernetesTestServer, backends: list[HTTPBackend], configuration: Any
) -> None:
    lb = LoadBalancer(registry(configuration))
    with pytest.raises(NoAvailableInstance, match="lists no instance"):
        lb.pick("later")  # a Service without slices (yet): empty, not an error
    api.scale(NS, "later", [backends[3].address])  # scaled up from zero: picked up by the watch
    wait_for(lambda: bool(lb.service("later").usable))
    lb.pick("later").done()
    with pytest.raises(ServiceNotFound, match="not a Kubernetes Service name"):
        lb.pick("api.example.com")
    outside = backends[4]
    transport = LoadBalancedTransport(lb, unknown_service="passthrough")
    with httpx.Client(transport=transport) as passthrough:
        # A host that cannot be a Service goes straight through.
        assert passthrough.get(f"http://127.0.0.1:{outside.port}/").status_code == 200
    lb.close()


def test_legacy_endpoints_fallback(backends: list[HTTPBackend]) -> None:
    import kubernetes.client

    with KubernetesTestServer(endpointslices=False) as old:
        old.scale(NS, "orders", [b.address for b in backends[:2]])
        configuration = kubernetes.client.Configuration(host=old.url)
        with (
            pytest.raises(ConfigurationError, match="legacy_endpoints=True"),
            LoadBalancer(registry(configuration)) as lb,
        ):
            lb.pick("orders")
        with LoadBalancer(registry(configuration, legacy_endpoints=True)) as lb:
            assert len(usable(lb)) == 2
            old.scale(NS, "orders", [b.address for b in backends[:3]])
            wait_for(lambda: len(usable(lb)) == 3)


def test_from_uri_finds_the_cluster_through_kubeconfig(
    api: KubernetesTestServer,
    backends: list[HTTPBackend],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "{api.url}"}}}}]
users: [{{name: me, user: {{token: {TOKEN}}}}}]
contexts: [{{name: test, context: {{cluster: test, user: me, namespace: {NS}}}}}]
current-context: test
"""
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    api.scale(NS, "orders", [backends[0].address])
    api.scale(NS, "payments", [backends[1].address])
    reg = registry_from_uri("k8s://shop/orders:http")
    assert isinstance(reg, KubernetesRegistry)
    with LoadBalancer(reg) as lb:
        assert usable(lb) == {backends[0].address}
        with pytest.raises(ServiceNotFound, match="not one this registry serves"):
            lb.pick("payments")
    with pytest.raises(ConfigurationError, match="unknown option"):
        registry_from_uri("k8s://shop/orders?prot=http")
    several = registry_from_uri(
        "kubernetes://shop/orders:http,payments:9090?fallback_to_terminating=true"
    )
    assert isinstance(several, KubernetesRegistry)
    assert several.services == {"orders", "payments"}
    assert several.ports == {"orders": "http", "payments": 9090}
    assert several.fallback_to_terminating
    anywhere = registry_from_uri("k8s://shop?port=grpc")
    assert isinstance(anywhere, KubernetesRegistry)
    assert anywhere.services is None
    assert anywhere.port == "grpc"
    several.close()
    anywhere.close()


def test_no_configuration_at_all_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigurationError, match="no usable Kubernetes configuration"):
        KubernetesRegistry("shop")


def test_an_unreachable_api_server_is_registry_unavailable(backends: list[HTTPBackend]) -> None:
    import kubernetes.client

    from lbclient import RegistryUnavailable
    from lbclient.testing import free_port

    configuration = kubernetes.client.Configuration(host=f"http://127.0.0.1:{free_port()}")
    configuration.retries = 0
    with LoadBalancer(registry(configuration)) as lb, pytest.raises(RegistryUnavailable) as error:
        lb.pick("orders")
    assert "cannot reach the Kubernetes API" in str(error.value)


def test_close_leaves_no_watch_thread(
    api: KubernetesTestServer, backends: list[HTTPBackend], configuration: Any
) -> None:
    api.scale(NS, "orders", [backends[0].address])
    api.scale(NS, "payments", [backends[1].address])
    lb = LoadBalancer(registry(configuration))
    lb.pick("orders").done()
    lb.pick("payments").done()
    assert watch_threads() == ["lbclient-watch-loop"]  # one thread for both watches
    assert SharedLoop.task_names() == [
        f"lbclient-watch-k8s:{NS}/{s}" for s in ("orders", "payments")
    ]
    lb.close()
    assert watch_threads() == []


def watch_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("lbclient-watch-"))


def test_churn_under_traffic_ends_with_the_exact_final_set(
    api: KubernetesTestServer, backends: list[HTTPBackend], lb: LoadBalancer, client: httpx.Client
) -> None:
    """Pods come and go (removed ones keep running, as during a grace period) under traffic."""
    import random

    rng = random.Random(6)
    api.scale(NS, "orders", [b.address for b in backends[:2]])
    spread(client, 2)
    failures: list[BaseException] = []
    done = threading.Event()

    def traffic() -> None:
        while not done.is_set():
            try:
                client.get("http://orders/x").raise_for_status()
            except Exception as exc:
                failures.append(exc)

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(30):
            chosen = rng.sample(backends, rng.randint(1, len(backends)))
            api.scale(NS, "orders", [b.address for b in chosen])
            time.sleep(0.01)
        final = {b.address for b in chosen}
        wait_for(lambda: usable(lb) == final)
    finally:
        done.set()
        for worker in workers:
            worker.join()
    assert failures == []
    state = lb.service("orders")
    assert set(state.endpoints) == final
    assert all(e.in_flight == 0 for e in state.endpoints.values())
