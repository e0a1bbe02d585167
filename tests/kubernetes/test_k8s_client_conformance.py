"""KubernetesTestServer driven by the official clients: ``kubernetes`` (typed APIs, Watch,
SharedInformer) and ``kubernetes.aio``, for every endpoint and parameter the server claims.
What the clients cannot send (malformed selectors, odd methods, raw bodies) is covered over
raw HTTP in test_k8s_server_conformance.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
from k8s_support import NS, TOKEN, wait_for
from kubernetes.client.exceptions import ApiException
from kubernetes.informer import SharedInformer
from kubernetes.watch import Watch

from lbclient.testing.kubernetes import KubernetesTestServer, endpoint

SERVICE = "kubernetes.io/service-name"


@pytest.fixture
def discovery(configuration: Any) -> Iterator[Any]:
    with kubernetes.client.ApiClient(configuration) as api_client:
        yield kubernetes.client.DiscoveryV1Api(api_client)


def names(result: Any) -> list[str]:
    return sorted(item.metadata.name for item in result.items)


def failure(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    assert body["kind"] == "Status"
    assert body["code"] == exc.status
    return body


def test_typed_list_with_every_selector_form(api: KubernetesTestServer, discovery: Any) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    api.scale(NS, "payments", ["127.0.0.1:9001"])
    api.apply_slice(NS, "carts", "carts-x", endpoints=None, ports=None, labels={"tier": "7"})
    listed = discovery.list_namespaced_endpoint_slice(NS, label_selector=f"{SERVICE}=orders")
    assert names(listed) == ["orders-8001"]
    assert listed.metadata.resource_version == str(api.resource_version)
    assert listed.items[0].endpoints[0].addresses == ["127.0.0.1"]
    cases = {
        f"{SERVICE}==orders": ["orders-8001"],
        f"{SERVICE}!=orders": ["carts-x", "payments-9001"],
        f"{SERVICE} in (orders, payments)": ["orders-8001", "payments-9001"],
        f"{SERVICE} notin (orders)": ["carts-x", "payments-9001"],
        "tier": ["carts-x"],
        "!tier": ["orders-8001", "payments-9001"],
        "tier>6": ["carts-x"],
        "tier<7": [],
        f"{SERVICE},tier": ["carts-x"],
    }
    for selector, expected in cases.items():
        assert names(discovery.list_namespaced_endpoint_slice(NS, label_selector=selector)) == (
            expected
        ), selector
    by_name = discovery.list_namespaced_endpoint_slice(NS, field_selector="metadata.name=carts-x")
    assert names(by_name) == ["carts-x"]
    everywhere = discovery.list_endpoint_slice_for_all_namespaces(label_selector="tier")
    assert names(everywhere) == ["carts-x"]
    assert everywhere.items[0].endpoints is None  # an empty slice is served as null


def test_typed_get_and_the_not_found_status(api: KubernetesTestServer, discovery: Any) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    one = discovery.read_namespaced_endpoint_slice("orders-8001", NS)
    assert one.kind == "EndpointSlice"
    assert one.metadata.labels[SERVICE] == "orders"
    with pytest.raises(ApiException) as caught:
        discovery.read_namespaced_endpoint_slice("nope", NS)
    body = failure(caught.value)
    assert (caught.value.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'endpointslices.discovery.k8s.io "nope" not found'
    assert body["details"] == {
        "name": "nope",
        "group": "discovery.k8s.io",
        "kind": "endpointslices",
    }


def test_core_endpoints_through_core_v1(api: KubernetesTestServer, configuration: Any) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    with kubernetes.client.ApiClient(configuration) as api_client:
        core = kubernetes.client.CoreV1Api(api_client)
        listed = core.list_namespaced_endpoints(NS, field_selector="metadata.name=orders")
        assert [s.addresses[0].ip for s in listed.items[0].subsets] == ["127.0.0.1"]
        api.forbid(NS)
        with pytest.raises(ApiException) as caught:
            core.read_namespaced_endpoints("orders", NS)
    body = failure(caught.value)
    assert body["details"] == {"kind": "endpoints"}  # the core group is left out, not ""
    assert 'cannot get resource "endpoints" in API group ""' in body["message"]


def test_list_resource_version_semantics(discovery: Any, configuration: Any) -> None:
    with KubernetesTestServer(too_large_wait=0.2) as api:
        configuration.host = api.url
        configuration.api_key = {}
        with kubernetes.client.ApiClient(configuration) as api_client:
            slices = kubernetes.client.DiscoveryV1Api(api_client)
            api.scale(NS, "orders", ["127.0.0.1:8001"])
            now = str(api.resource_version)
            ok = slices.list_namespaced_endpoint_slice(NS, resource_version=now)
            assert ok.metadata.resource_version == now
            exact = slices.list_namespaced_endpoint_slice(
                NS, resource_version=now, resource_version_match="Exact"
            )
            assert names(exact) == ["orders-8001"]
            paged = slices.list_namespaced_endpoint_slice(NS, limit=1)
            assert paged.metadata._continue is None  # one complete page, as the watch cache
            with pytest.raises(ApiException) as caught:
                slices.list_namespaced_endpoint_slice(NS, resource_version=str(int(now) + 5))
            body = failure(caught.value)
            assert (caught.value.status, body["reason"]) == (504, "Timeout")
            assert body["message"] == (
                f"Timeout: Too large resource version: {int(now) + 5}, current: {now}"
            )
            assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
            api.scale(NS, "orders", ["127.0.0.1:8002"])
            with pytest.raises(ApiException) as caught:
                slices.list_namespaced_endpoint_slice(
                    NS, resource_version=now, resource_version_match="Exact"
                )
            assert failure(caught.value)["reason"] == "Expired"
            with pytest.raises(ApiException) as caught:
                slices.list_namespaced_endpoint_slice(NS, resource_version_match="NotOlderThan")
            assert (caught.value.status, failure(caught.value)["reason"]) == (422, "Invalid")


def test_watch_stream_with_bookmarks_and_timeout(api: KubernetesTestServer, discovery: Any) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    listed = discovery.list_namespaced_endpoint_slice(NS, label_selector=f"{SERVICE}=orders")
    threading.Timer(0.1, api.scale, (NS, "orders", ["127.0.0.1:8001", "127.0.0.2:8001"])).start()
    seen = []
    watch = Watch()
    for event in watch.stream(
        discovery.list_namespaced_endpoint_slice,
        NS,
        label_selector=f"{SERVICE}=orders",
        resource_version=listed.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
    ):
        seen.append(event["type"])
    assert seen[0] == "MODIFIED"
    assert "BOOKMARK" in seen  # bookmark_interval 0.2 s in the fixture; the stream lasts 1 s
    assert int(watch.resource_version) >= api.resource_version


def test_shared_informer_over_discovery_v1(api: KubernetesTestServer, discovery: Any) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    informer = SharedInformer(
        discovery.list_namespaced_endpoint_slice,
        namespace=NS,
        label_selector=f"{SERVICE}=orders",
    )
    events: list[str] = []
    for kind in ("ADDED", "MODIFIED", "DELETED"):
        informer.add_event_handler(kind, lambda obj, kind=kind: events.append(kind))
    informer.start()
    try:
        wait_for(lambda: informer.cache.list_keys() == [f"{NS}/orders-8001"])
        wait_for(lambda: api.open_watches == 1)
        api.scale(NS, "orders", ["127.0.0.1:8001", "127.0.0.1:8002"])
        wait_for(lambda: len(informer.cache.list_keys()) == 2)
        api.scale(NS, "orders", ["127.0.0.1:8002"])
        wait_for(lambda: informer.cache.list_keys() == [f"{NS}/orders-8002"])
        # History compacted while the informer reconnects: 410, relist, still in sync.
        with api.watches_held():
            api.close_watches()
            api.scale(NS, "orders", ["127.0.0.1:8003"])
            api.compact()
        wait_for(lambda: informer.cache.list_keys() == [f"{NS}/orders-8003"])
    finally:
        stopper = threading.Thread(target=informer.stop)
        stopper.start()
        while stopper.is_alive():  # stop() waits for the open watch: end it
            api.close_watches()
            stopper.join(0.05)
    assert events[:3] == ["ADDED", "ADDED", "DELETED"]


def test_keep_alive_connection_survives_a_refused_write(
    api: KubernetesTestServer, configuration: Any
) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    with kubernetes.client.ApiClient(configuration) as api_client:
        slices = kubernetes.client.DiscoveryV1Api(api_client)
        body = kubernetes.client.V1EndpointSlice(
            address_type="IPv4", metadata=kubernetes.client.V1ObjectMeta(name="x"), endpoints=[]
        )
        with pytest.raises(ApiException) as caught:
            slices.create_namespaced_endpoint_slice(NS, body)
        assert (caught.value.status, failure(caught.value)["reason"]) == (405, "MethodNotAllowed")
        listed = slices.list_namespaced_endpoint_slice(NS)  # the same pooled connection
        assert names(listed) == ["orders-8001"]
        pools = list(api_client.rest_client.pool_manager.pools._container.values())
        assert [pool.num_connections for pool in pools] == [1]


async def test_the_aio_client_lists_gets_and_watches(api: KubernetesTestServer) -> None:
    from kubernetes.aio import client as aio_client
    from kubernetes.aio import watch as aio_watch

    api.scale(NS, "orders", ["127.0.0.1:8001"])
    configuration = aio_client.Configuration(
        host=api.url,
        api_key={"BearerToken": TOKEN},
        api_key_prefix={"BearerToken": "Bearer"},
    )
    async with aio_client.ApiClient(configuration) as api_client:
        slices = aio_client.DiscoveryV1Api(api_client)
        listed = await slices.list_namespaced_endpoint_slice(
            NS, label_selector=f"{SERVICE} in (orders)"
        )
        assert names(listed) == ["orders-8001"]
        with pytest.raises(aio_client.ApiException) as caught:
            await slices.list_namespaced_endpoint_slice(NS, label_selector="tier=a b")
        assert caught.value.status == 400
        assert json.loads(caught.value.body)["message"] == (
            "found 'b', expected: ',' or 'end of string'"
        )
        api.apply_slice(NS, "orders", "orders-extra", endpoints=[endpoint("10.0.0.9")], ports=None)
        types = []
        watch = aio_watch.Watch()
        async for event in watch.stream(
            slices.list_namespaced_endpoint_slice,
            NS,
            label_selector=f"{SERVICE}=orders",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=1,
        ):
            types.append(event["type"])
            watch.stop()
        assert types == ["ADDED"]
