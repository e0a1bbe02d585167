"""Many watched Services, few threads and few watches.

Sync watches are tasks of the one shared loop; past ``namespace_watch_from`` services, the
rest share one namespace-wide watch fanned out per service. Either way each service sees its
own changes (and only its own list is republished), and closing or dropping the balancer
stops every watch.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import pytest
from k8s_support import NS, wait_for

from lbclient import LoadBalancer, LoadBalancerListener
from lbclient.kubernetes import KubernetesRegistry
from lbclient.registry._loop import SharedLoop
from lbclient.testing.kubernetes import KubernetesTestServer

SERVICES = [f"svc-{n:02d}" for n in range(50)]


def registry(configuration: Any, **options: Any) -> KubernetesRegistry:
    return KubernetesRegistry(
        NS, port="http", configuration=configuration, min_backoff=0.02, max_backoff=0.2, **options
    )


def lbclient_threads() -> list[str]:
    gc.collect()
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("lbclient-"))


def ports(lb: LoadBalancer, service: str) -> set[int]:
    return {e.instance.port for e in lb.service(service).endpoints.values()}


@pytest.fixture
def scene(api: KubernetesTestServer) -> None:
    for n, service in enumerate(SERVICES):
        api.scale(NS, service, [f"127.0.0.{n + 1}:9001"])


def watch_everything(lb: LoadBalancer) -> None:
    for service in SERVICES:
        lb.pick(service).done()


def change_some_and_check_all(api: KubernetesTestServer, lb: LoadBalancer) -> None:
    changed = SERVICES[::7]
    for n, service in enumerate(SERVICES):
        if service in changed:
            api.scale(NS, service, [f"127.0.0.{n + 1}:9001", f"127.0.0.{n + 1}:9002"])
    for service in SERVICES:
        expected = {9001, 9002} if service in changed else {9001}
        wait_for(lambda service=service, expected=expected: ports(lb, service) == expected)


@pytest.mark.parametrize("namespace_watch_from", [None, 10, 1])
def test_fifty_services_one_thread_and_every_change_arrives(
    api: KubernetesTestServer, configuration: Any, scene: None, namespace_watch_from: int | None
) -> None:
    assert lbclient_threads() == []
    lb = LoadBalancer(registry(configuration, namespace_watch_from=namespace_watch_from))
    watch_everything(lb)
    threads = lbclient_threads()
    assert threads.count("lbclient-watch-loop") == 1
    assert len(threads) <= 2, threads  # the loop, and outlier detection's shared timer
    own = {None: 50, 10: 9, 1: 0}[namespace_watch_from]
    expected = [f"lbclient-watch-k8s:{NS}/{s}" for s in SERVICES[:own]]
    if own < 50:
        expected.append(f"lbclient-watch-k8s:{NS}/*")
    assert SharedLoop.task_names() == sorted(expected)
    wait_for(lambda: api.open_watches == len(expected))
    change_some_and_check_all(api, lb)
    assert len(lbclient_threads()) <= 2
    lb.close()
    assert lbclient_threads() == []
    wait_for(lambda: api.open_watches == 0)


def test_the_namespace_watch_republishes_only_the_service_that_changed(
    api: KubernetesTestServer, configuration: Any, scene: None
) -> None:
    published: list[str] = []

    class Seen(LoadBalancerListener):
        def on_instances(self, service: str, usable: Any) -> None:
            published.append(service)

    with LoadBalancer(registry(configuration, namespace_watch_from=1), listeners=[Seen()]) as lb:
        watch_everything(lb)
        wait_for(lambda: api.open_watches == 1)
        time.sleep(0.2)  # any catch-up publication has happened
        published.clear()
        api.scale(NS, SERVICES[3], ["127.0.0.4:9001", "127.0.0.4:9003"])
        wait_for(lambda: ports(lb, SERVICES[3]) == {9001, 9003})
        api.scale(NS, "not-watched", ["127.0.0.99:9001"])
        api.scale(NS, SERVICES[4], ["127.0.0.5:9001", "127.0.0.99:9001"])  # one slice changes
        wait_for(lambda: len(lb.service(SERVICES[4]).endpoints) == 2)
        assert published == [SERVICES[3], SERVICES[4]]


def test_a_dropped_balancer_stops_the_namespace_watch(
    api: KubernetesTestServer, configuration: Any, scene: None
) -> None:
    lb = LoadBalancer(registry(configuration, namespace_watch_from=5))
    watch_everything(lb)
    wait_for(lambda: api.open_watches == 5)
    with pytest.warns(ResourceWarning):
        del lb
    assert lbclient_threads() == []
    wait_for(lambda: api.open_watches == 0)


def test_namespace_watch_from_is_checked(configuration: Any) -> None:
    from lbclient import ConfigurationError

    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(ConfigurationError, match="namespace_watch_from"):
            registry(configuration, namespace_watch_from=bad)


def test_the_namespace_state_files_each_slice_under_its_service() -> None:
    """No I/O: a slice relabelled to another service leaves the first and joins the second;
    a deletion, a relist and an unlabelled object mark exactly the services they touch."""
    import json

    from lbclient.kubernetes._kinds import ENDPOINT_SLICES
    from lbclient.kubernetes._namespace import NamespaceListWatch

    def slice_(name: str, service: str | None) -> dict[str, Any]:
        labels = {"kubernetes.io/service-name": service} if service else {}
        return {"metadata": {"name": name, "labels": labels, "resourceVersion": "1"}}

    def event(kind: str, obj: dict[str, Any]) -> str:
        return json.dumps({"type": kind, "object": obj})

    state = NamespaceListWatch("ns", ENDPOINT_SLICES.service_of)
    state.listed(
        {
            "metadata": {"resourceVersion": "1"},
            "items": [slice_("a-1", "a"), slice_("b-1", "b"), slice_("x", None)],
        }
    )
    assert state.dirty == {"a", "b"}
    assert set(state.members) == {"a", "b"}
    state.dirty.clear()
    state.opened(object())
    state.received(event("MODIFIED", slice_("a-1", "c")))
    assert state.dirty == {"a", "c"}
    assert "a" not in state.members
    assert [o["metadata"]["name"] for o in state.objects_of("c")] == ["a-1"]
    state.dirty.clear()
    state.received(event("DELETED", slice_("b-1", "b")))
    assert state.dirty == {"b"}
    assert state.objects_of("b") == []
    state.dirty.clear()
    state.received(event("ADDED", slice_("y", None)))
    assert state.dirty == set()
    state.listed({"metadata": {"resourceVersion": "9"}, "items": [slice_("d-1", "d")]})
    assert state.dirty == {"c", "d"}
    assert set(state.members) == {"d"}
