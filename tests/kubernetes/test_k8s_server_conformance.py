"""KubernetesTestServer over raw HTTP, checked against the documented API behaviour."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote

import pytest
from k8s_support import NS, TOKEN

from lbclient.testing.kubernetes import KubernetesTestServer, endpoint

SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def selector(service: str) -> str:
    return "labelSelector=" + quote(f"kubernetes.io/service-name={service}", safe="")


def get(api: KubernetesTestServer, path: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("GET", path, headers=AUTH if headers is None else headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), json.loads(body)


def watch(api: KubernetesTestServer, query: str) -> tuple[http.client.HTTPResponse, Any]:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("GET", f"{SLICES}?watch=true&{query}", headers=AUTH)
    return conn.getresponse(), conn


def events(response: http.client.HTTPResponse, count: int) -> list[dict[str, Any]]:
    """Read ``count`` newline-delimited events (http.client undoes the chunking)."""
    return [json.loads(response.readline()) for _ in range(count)]


def test_requests_without_the_bearer_token_get_401_status(api: KubernetesTestServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        code, _, body = get(api, SLICES, headers)
        assert code == 401
        assert body["kind"] == "Status"
        assert body["code"] == 401
        assert body["reason"] == "Unauthorized"
        assert body["status"] == "Failure"


def test_list_by_service_label_carries_the_global_resource_version(
    api: KubernetesTestServer,
) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001", "127.0.0.1:8002"])
    api.scale(NS, "payments", ["127.0.0.1:9001"])
    code, headers, body = get(api, f"{SLICES}?{selector('orders')}")
    assert code == 200
    assert headers["Content-Type"] == "application/json"
    assert body["kind"] == "EndpointSliceList"
    assert body["apiVersion"] == "discovery.k8s.io/v1"
    assert body["metadata"]["resourceVersion"] == str(api.resource_version)
    names = sorted(item["metadata"]["name"] for item in body["items"])
    assert names == ["orders-8001", "orders-8002"]
    item = body["items"][0]
    assert "kind" not in item  # list items carry no kind, as from a real server
    assert item["metadata"]["labels"]["kubernetes.io/service-name"] == "orders"
    assert int(item["metadata"]["resourceVersion"]) <= api.resource_version
    assert item["addressType"] == "IPv4"
    assert item["ports"][0]["name"] == "http"


def test_label_selector_subset(api: KubernetesTestServer) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    api.scale(NS, "payments", ["127.0.0.1:9001"])
    not_orders = quote("kubernetes.io/service-name!=orders", safe="")
    _, _, body = get(api, f"{SLICES}?labelSelector={not_orders}")
    assert [i["metadata"]["name"] for i in body["items"]] == ["payments-9001"]
    _, _, body = get(api, f"{SLICES}?labelSelector=kubernetes.io%2Fservice-name")
    assert len(body["items"]) == 2
    set_based = quote("kubernetes.io/service-name in (orders,carts)", safe="")
    _, _, body = get(api, f"{SLICES}?labelSelector={set_based}")
    assert [i["metadata"]["name"] for i in body["items"]] == ["orders-8001"]
    code, _, body = get(api, f"{SLICES}?labelSelector=" + quote("=web", safe=""))
    assert code == 400
    assert body["reason"] == "BadRequest"


def test_an_empty_slice_is_served_with_null_endpoints_and_ports(api: KubernetesTestServer) -> None:
    api.apply_slice(NS, "orders", "orders-empty", endpoints=[], ports=[])
    _, _, body = get(api, f"{SLICES}?{selector('orders')}")
    assert body["items"][0]["endpoints"] is None
    assert body["items"][0]["ports"] is None


def test_every_write_bumps_the_resource_version(api: KubernetesTestServer) -> None:
    before = api.resource_version
    api.apply_slice(NS, "orders", "s1", endpoints=[endpoint("10.0.0.1")], ports=[{"port": 80}])
    first = api.resource_version
    api.apply_slice(NS, "orders", "s1", endpoints=[endpoint("10.0.0.1")], ports=[{"port": 80}])
    assert api.resource_version == first  # an identical write is not a change
    api.set_conditions(NS, "orders", "10.0.0.1", ready=False)
    assert before < first < api.resource_version


def test_watch_streams_chunked_newline_delimited_events_from_a_version(
    api: KubernetesTestServer,
) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    _, _, listed = get(api, f"{SLICES}?{selector('orders')}")
    version = listed["metadata"]["resourceVersion"]
    response, conn = watch(api, f"{selector('orders')}&resourceVersion={version}")
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Type") == "application/json"
    api.scale(NS, "orders", ["127.0.0.1:8001", "127.0.0.1:8002"])
    api.set_conditions(NS, "orders", "127.0.0.1:8001", terminating=True)
    api.scale(NS, "orders", ["127.0.0.1:8002"])
    api.scale(NS, "payments", ["127.0.0.1:9001"])  # filtered out by the selector
    got = events(response, 3)
    conn.close()
    assert [e["type"] for e in got] == ["ADDED", "MODIFIED", "DELETED"]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in got]
    assert versions == sorted(versions)
    assert versions[0] > int(version)
    assert got[0]["object"]["kind"] == "EndpointSlice"
    conditions = got[1]["object"]["endpoints"][0]["conditions"]
    assert conditions == {"ready": False, "serving": True, "terminating": True}


def test_watch_without_a_version_starts_with_the_current_state(api: KubernetesTestServer) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001", "127.0.0.1:8002"])
    response, conn = watch(api, selector("orders"))
    got = events(response, 2)
    conn.close()
    assert [e["type"] for e in got] == ["ADDED", "ADDED"]


def test_bookmarks_carry_only_the_resource_version(api: KubernetesTestServer) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    version = api.resource_version
    response, conn = watch(
        api, f"{selector('orders')}&resourceVersion={version}&allowWatchBookmarks=true"
    )
    (bookmark,) = events(response, 1)
    conn.close()
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"] == {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": str(version)},
    }


def test_a_compacted_version_gets_error_410_on_a_200_stream(api: KubernetesTestServer) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    old = api.resource_version
    api.scale(NS, "orders", ["127.0.0.1:8002"])
    compacted = api.compact()
    response, conn = watch(api, f"{selector('orders')}&resourceVersion={old}")
    assert response.status == 200  # NOT an HTTP 410
    body = response.read()  # one event, then the stream ends
    conn.close()
    (line,) = body.splitlines()
    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert event["object"] == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: {old} ({compacted})",
        "reason": "Expired",
        "code": 410,
    }
    assert api.expired_watches == 1
    # A watch from the compacted version itself (what a new list returns) is fine.
    response, conn = watch(
        api, f"{selector('orders')}&resourceVersion={compacted}&timeoutSeconds=1"
    )
    assert response.status == 200
    assert response.read() == b""
    conn.close()


def test_timeout_seconds_ends_the_stream_cleanly(api: KubernetesTestServer) -> None:
    response, conn = watch(
        api, f"{selector('orders')}&resourceVersion={api.resource_version}&timeoutSeconds=1"
    )
    assert response.read() == b""  # http.client saw the terminating chunk: no IncompleteRead
    assert not response.will_close  # and the connection stays usable (keep-alive)
    conn.close()


def test_close_watches_ends_streams_cleanly(api: KubernetesTestServer) -> None:
    response, conn = watch(api, f"{selector('orders')}&resourceVersion={api.resource_version}")
    api.close_watches()
    assert response.read() == b""
    conn.close()


def test_forbidden_namespace_gets_the_rbac_message(api: KubernetesTestServer) -> None:
    api.forbid(NS)
    code, _, body = get(api, f"{SLICES}?{selector('orders')}")
    assert code == 403
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:default:'
        'default" cannot list resource "endpointslices" in API group "discovery.k8s.io" in '
        'the namespace "shop"'
    )


def test_legacy_endpoints_mirror_the_slices(api: KubernetesTestServer) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001", "127.0.0.2:8001"])
    api.set_conditions(NS, "orders", "127.0.0.2", ready=False)
    path = f"/api/v1/namespaces/{NS}/endpoints?fieldSelector=" + quote("metadata.name=orders")
    code, _, body = get(api, path)
    assert code == 200
    assert body["kind"] == "EndpointsList"
    assert body["apiVersion"] == "v1"
    (obj,) = body["items"]
    (subset,) = obj["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["127.0.0.1"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["127.0.0.2"]
    assert subset["ports"] == [{"name": "http", "port": 8001, "protocol": "TCP"}]


def test_unknown_paths_and_clusters_without_endpointslices_get_404() -> None:
    with KubernetesTestServer(endpointslices=False) as old:
        code, _, body = get(old, SLICES, {})
        assert code == 404
        assert body["reason"] == "NotFound"
        code, _, _ = get(old, f"/api/v1/namespaces/{NS}/endpoints", {})
        assert code == 200
        code, _, _ = get(old, "/apis/apps/v1/deployments", {})
        assert code == 404


def test_down_refuses_connections_and_up_keeps_state_and_port(api: KubernetesTestServer) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    port, version = api.port, api.resource_version
    response, conn = watch(api, f"{selector('orders')}&resourceVersion={version}")
    api.down()
    with pytest.raises(http.client.IncompleteRead):
        response.read()  # the stream is cut, not ended
    conn.close()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((api.host, port)):
        pass
    api.up()
    assert api.port == port
    _, _, body = get(api, f"{SLICES}?{selector('orders')}")
    assert body["metadata"]["resourceVersion"] == str(version)
    assert len(body["items"]) == 1


def test_relabelling_a_slice_is_deleted_for_old_watchers_and_added_for_new(
    api: KubernetesTestServer,
) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    version = api.resource_version
    old_watch, old_conn = watch(api, f"{selector('orders')}&resourceVersion={version}")
    new_watch, new_conn = watch(api, f"{selector('payments')}&resourceVersion={version}")
    (moved,) = api.slices(NS, "orders")
    api.apply_slice(
        NS,
        "payments",
        moved["metadata"]["name"],
        endpoints=moved["endpoints"],
        ports=moved["ports"],
    )
    (deleted,) = events(old_watch, 1)
    (added,) = events(new_watch, 1)
    old_conn.close()
    new_conn.close()
    assert deleted["type"] == "DELETED"
    assert deleted["object"]["metadata"]["labels"]["kubernetes.io/service-name"] == "orders"
    assert added["type"] == "ADDED"
    assert deleted["object"]["metadata"]["resourceVersion"] == str(api.resource_version - 2)
    assert api.endpoints_object(NS, "orders") is None


def test_the_http_410_variant_of_an_expired_watch(api: KubernetesTestServer) -> None:
    old = api.resource_version
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    api.compact()
    api.expired_as_http_410 = True
    response, conn = watch(api, f"{selector('orders')}&resourceVersion={old}")
    body = json.loads(response.read())
    conn.close()
    assert response.status == 410
    assert body["code"] == 410
    assert body["reason"] == "Expired"


# -- what the clients cannot send ------------------------------------------------------------

NAME_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


PARSE = "unable to parse requirement: "


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("=web", "found '=', expected: !, identifier, or 'end of string'"),
        ("tier=web=x", "found '=', expected: ',' or 'end of string'"),
        ("tier=a b", "found 'b', expected: ',' or 'end of string'"),
        ("ti er=web", PARSE + "found 'er', expected: in, notin, =, ==, !=, gt, lt"),
        ("tier,", "found '', expected: identifier after ','"),
        ("tier in a", PARSE + "found 'a' expected: '('"),
        ("tier=a@b", PARSE + f'values[0][tier]: Invalid value: "a@b": {VALUE_RULE}'),
        ("-tier=a", PARSE + f'<nil>: Invalid value: "-tier": {NAME_RULE}'),
        ("tier>x", PARSE + 'values[0]: Invalid value: "x": '
                   "for 'Gt', 'Lt' operators, the value must be an integer"),
        ("a=>b", PARSE + "found '>', expected: identifier"),
    ],
)  # fmt: skip
def test_malformed_label_selectors_get_apimachinerys_400(
    api: KubernetesTestServer, selector: str, message: str
) -> None:
    code, _, body = get(api, f"{SLICES}?labelSelector={quote(selector, safe='')}")
    assert (code, body["reason"]) == (400, "BadRequest")
    assert body["message"] == message
    assert "details" not in body


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("fieldSelector=spec.zone%3Da", "field label not supported: spec.zone"),
        ("fieldSelector=metadata.name",
         "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("timeoutSeconds=soon", 'strconv.ParseInt: parsing "soon": invalid syntax'),
        ("watch=1&timeoutSeconds=1.5", 'strconv.ParseInt: parsing "1.5": invalid syntax'),
        ("resourceVersion=latest",
         'resourceVersion: Invalid value: "latest": strconv.ParseUint: parsing "latest"'),
        ("continue=abc", 'continue: Invalid value: "abc": continue key is not valid'),
    ],
)  # fmt: skip
def test_bad_query_parameters_get_400(api: KubernetesTestServer, query: str, message: str) -> None:
    code, _, body = get(api, f"{SLICES}?{query}")
    assert (code, body["reason"]) == (400, "BadRequest")
    assert body["message"].startswith(message)


def test_send_initial_events_is_refused_as_with_the_watchlist_gate_off(
    api: KubernetesTestServer,
) -> None:
    code, _, body = get(api, f"{SLICES}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true")
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "sendInitialEvents"


def test_booleans_read_as_apimachinery_reads_them(api: KubernetesTestServer) -> None:
    api.scale(NS, "orders", ["127.0.0.1:8001"])
    for value in ("false", "0", "FALSE"):
        code, _, body = get(api, f"{SLICES}?watch={value}")
        assert (code, body["kind"]) == (200, "EndpointSliceList")
    for value in ("yes", "", "True"):  # anything else is true, even empty
        response, conn = watch_raw(api, f"watch={value}&timeoutSeconds=1")
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert json.loads(response.readline())["type"] == "ADDED"
        conn.close()


def watch_raw(api: KubernetesTestServer, query: str) -> tuple[http.client.HTTPResponse, Any]:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("GET", f"{SLICES}?{query}", headers=AUTH)
    return conn.getresponse(), conn


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"])
def test_every_other_method_gets_a_405_status_and_the_connection_stays_usable(
    api: KubernetesTestServer, method: str
) -> None:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request(method, SLICES, body=b'{"kind": "EndpointSlice"}', headers=AUTH)
    response = conn.getresponse()
    body = json.loads(response.read())
    assert (response.status, response.getheader("Content-Type")) == (405, "application/json")
    assert (body["kind"], body["reason"]) == ("Status", "MethodNotAllowed")
    assert body["message"] == "the server does not allow this method on the requested resource"
    assert body["details"] == {}
    conn.request("GET", SLICES, headers=AUTH)  # the same connection, the body was consumed
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())["kind"]) == (200, "EndpointSliceList")
    conn.close()


def test_head_gets_the_405_headers_without_a_body(api: KubernetesTestServer) -> None:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("HEAD", SLICES, headers=AUTH)
    response = conn.getresponse()
    assert (response.status, response.read()) == (405, b"")
    conn.request("GET", SLICES, headers=AUTH)
    assert conn.getresponse().status == 200
    conn.close()


def test_a_chunked_request_body_is_consumed_too(api: KubernetesTestServer) -> None:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("POST", SLICES, body=iter([b'{"a":', b" 1}"]), headers=AUTH, encode_chunked=True)
    assert conn.getresponse().read()
    conn.request("GET", SLICES, headers=AUTH)
    assert conn.getresponse().status == 200
    conn.close()


def test_unknown_paths_get_404_with_empty_details(api: KubernetesTestServer) -> None:
    code, _, body = get(api, "/apis/apps/v1/namespaces/shop/deployments")
    assert (code, body["reason"], body["details"]) == (404, "NotFound", {})
