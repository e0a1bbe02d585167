"""ConsulTestServer against Consul's documented behaviour, in raw HTTP (reference/consul.md)."""

from __future__ import annotations

import json
import random
import threading
import time

import httpx
import pytest
from consul_helpers import wait_until

from lbclient.testing._consul_http import blocking_options
from lbclient.testing.consul import ConsulTestServer

CONFLICT = "conflicting semantics."


def put(http: httpx.Client, path: str, body: object = None, **kw: object) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    return http.put(path, content=content, **kw)  # type: ignore[arg-type]


def health(http: httpx.Client, name: str = "orders", **params: object) -> httpx.Response:
    return http.get(f"/v1/health/service/{name}", params=params)  # type: ignore[arg-type]


def test_register_accepts_any_key_case_and_defaults_check_id_name_and_status(http):
    body = {"name": "orders", "ID": "o1", "port": 8001, "tags": ["v2"], "check": {"ttl": "30s"}}
    response = put(http, "/v1/agent/service/register", body)
    assert (response.status_code, response.content) == (200, b"")
    put(
        http,
        "/v1/agent/service/register",
        {
            "Name": "orders",
            "id": "o2",
            "Port": 8002,
            "checks": [
                {"TTL": "30s", "status": "passing"},
                {"ttl": "30s", "deregister_critical_service_after": "5m"},
            ],
        },
    )
    entries = {e["Service"]["ID"]: e for e in health(http).json()}
    o1 = entries["o1"]
    assert o1["Service"]["Tags"] == ["v2"]
    assert o1["Service"]["Weights"] == {"Passing": 1, "Warning": 1}
    assert o1["Service"]["Address"] == ""
    assert o1["Node"]["Address"] == "127.0.0.1"
    check = o1["Checks"][1]
    assert (check["CheckID"], check["Name"], check["Status"]) == (
        "service:o1",
        "Service 'orders' check",
        "critical",
    )
    assert o1["Checks"][0]["CheckID"] == "serfHealth"
    assert [c["CheckID"] for c in entries["o2"]["Checks"][1:]] == ["service:o2:1", "service:o2:2"]
    assert [c["Status"] for c in entries["o2"]["Checks"][1:]] == ["passing", "critical"]


def test_read_headers_and_unknown_service(http):
    response = health(http, "nobody")
    assert response.status_code == 200
    assert response.json() == []
    assert int(response.headers["X-Consul-Index"]) >= 1  # never 0
    assert response.headers["X-Consul-KnownLeader"] == "true"
    assert response.headers["X-Consul-LastContact"].isdigit()
    assert response.headers["Content-Type"] == "application/json"


def test_passing_filters_on_every_check_including_the_node(http, server):
    for sid, status in (("p", "passing"), ("w", "warning"), ("c", "critical")):
        put(
            http,
            "/v1/agent/service/register",
            {"Name": "orders", "ID": sid, "Port": 1, "Check": {"TTL": "60s", "Status": status}},
        )
    ids = lambda r: sorted(e["Service"]["ID"] for e in r.json())  # noqa: E731
    assert ids(health(http)) == ["c", "p", "w"]
    assert ids(http.get("/v1/health/service/orders?passing")) == ["p"]
    for value in ("1", "t", "true", "TRUE"):
        assert ids(health(http, passing=value)) == ["p"]
    for value in ("0", "f", "false", "FALSE"):
        assert ids(health(http, passing=value)) == ["c", "p", "w"]
    bad = health(http, passing="yes")
    assert (bad.status_code, bad.text) == (400, "Invalid value for ?passing")
    server.set_node_status("critical")  # serfHealth failing drops every entry of the node
    assert ids(health(http, passing="1")) == []


def test_tags_node_meta_dc_and_filter(http):
    put(
        http,
        "/v1/agent/service/register",
        {"Name": "orders", "ID": "a", "Port": 1, "Tags": ["v2", "EU"], "Meta": {"zone": "z1"}},
    )
    put(
        http, "/v1/agent/service/register", {"Name": "orders", "ID": "b", "Port": 2, "Tags": ["v2"]}
    )
    ids = lambda r: sorted(e["Service"]["ID"] for e in r.json())  # noqa: E731
    assert ids(http.get("/v1/health/service/orders?tag=v2")) == ["a", "b"]
    assert ids(http.get("/v1/health/service/orders?tag=v2&tag=eu")) == ["a"]  # all must match
    assert ids(health(http, **{"node-meta": "rack:r1"})) == ["a", "b"]
    assert ids(health(http, **{"node-meta": "rack:r2"})) == []
    assert ids(health(http, dc="dc1")) == ["a", "b"]
    other = health(http, dc="dc9")
    assert (other.status_code, other.text) == (500, "No path to datacenter")
    assert ids(health(http, filter='Service.Meta.zone == "z1"')) == ["a"]
    assert ids(health(http, filter='"EU" in Service.Tags or Service.Port == 2')) == ["a", "b"]
    assert ids(health(http, filter='not (Service.Meta.zone is empty) and Service.ID != "b"')) == [
        "a"
    ]
    bad = health(http, filter="Service.ID ===")
    assert bad.status_code == 400
    assert bad.text.startswith("Failed to create boolean expression evaluator")


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"index": "1", "wait": "ten"}, "Invalid wait time"),
        ({"index": "x"}, "Invalid index"),
        ({"stale": "", "consistent": ""}, f"Cannot specify ?stale with ?consistent, {CONFLICT}"),
        ({"cached": "", "consistent": ""}, f"Cannot specify ?cached with ?consistent, {CONFLICT}"),
    ],
)
def test_documented_400_answers(http, params, text):
    response = health(http, **params)
    assert (response.status_code, response.text) == (400, text)


@pytest.mark.parametrize(
    ("wait", "base"), [(None, 300.0), ("0s", 300.0), ("-1s", 300.0), ("30s", 30.0), ("20m", 600.0)]
)
def test_blocking_wait_default_clamp_and_stagger(wait, base):
    params = {"index": ["5"]} | ({"wait": [wait]} if wait else {})
    for seed in range(20):
        index, hold = blocking_options(params, random.Random(seed))
        assert index == 5
        assert base <= hold <= base + base / 16


def test_blocking_query_wakes_on_change(http):
    index = int(health(http).headers["X-Consul-Index"])

    def register() -> None:  # its own client: the shared one is busy blocking
        with httpx.Client(base_url=str(http.base_url), timeout=10) as other:
            put(other, "/v1/agent/service/register", {"Name": "orders", "Port": 1})

    registrar = threading.Timer(0.1, register)
    registrar.start()
    response = health(http, index=index, wait="30s")
    registrar.join()
    assert int(response.headers["X-Consul-Index"]) > index
    assert [e["Service"]["ID"] for e in response.json()] == ["orders"]


def test_blocking_query_answers_when_the_wait_ends_with_the_same_index(http):
    index = health(http).headers["X-Consul-Index"]
    start = time.monotonic()
    response = health(http, index=index, wait="200ms")
    assert time.monotonic() - start >= 0.2  # it did block (a lower bound, not a speed claim)
    assert response.headers["X-Consul-Index"] == index
    assert response.json() == []


def test_ttl_expiry_turns_critical_with_consuls_output(http):
    put(
        http,
        "/v1/agent/service/register",
        {
            "Name": "orders",
            "ID": "o1",
            "Port": 1,
            "Checks": [{"CheckID": "noted", "TTL": "300ms"}, {"CheckID": "silent", "TTL": "300ms"}],
        },
    )
    assert put(http, "/v1/agent/check/pass/noted", params={"note": "all good"}).status_code == 200
    assert put(http, "/v1/agent/check/pass/silent").status_code == 200

    def outputs() -> dict[str, tuple[str, str]]:
        entry = health(http).json()[0]
        return {c["CheckID"]: (c["Status"], c["Output"]) for c in entry["Checks"]}

    wait_until(lambda: outputs()["noted"][0] == "critical" and outputs()["silent"][0] == "critical")
    assert outputs()["noted"] == (
        "critical",
        "TTL expired (last output before timeout follows): all good",
    )
    assert outputs()["silent"] == ("critical", "TTL expired")


def test_check_updates_and_documented_404_and_400_texts(http):
    put(
        http,
        "/v1/agent/service/register",
        {"Name": "orders", "ID": "o1", "Port": 1, "Check": {"CheckID": "c1", "TTL": "60s"}},
    )
    status = lambda: health(http).json()[0]["Checks"][1]  # noqa: E731
    put(http, "/v1/agent/check/warn/c1", params={"note": "slow"})
    assert (status()["Status"], status()["Output"]) == ("warning", "slow")
    put(http, "/v1/agent/check/update/c1", {"Status": "passing", "Output": "fine"})
    assert (status()["Status"], status()["Output"]) == ("passing", "fine")
    put(http, "/v1/agent/check/fail/c1")
    assert status()["Status"] == "critical"
    unknown = put(http, "/v1/agent/check/pass/c9")
    assert (unknown.status_code, unknown.text) == (
        404,
        'Unknown check ID "c9". Ensure that the check ID is passed, not the check name.',
    )
    gone = put(http, "/v1/agent/service/deregister/o9")
    assert (gone.status_code, gone.text) == (
        404,
        'Unknown service ID "o9". Ensure that the service ID is passed, not the service name.',
    )
    broken = http.put("/v1/agent/service/register", content=b"{nope")
    assert broken.status_code == 400
    assert broken.text.startswith("Request decode failed: ")
    assert http.get("/v1/agent/service/register").status_code == 405
    assert put(http, "/v1/agent/check/update/c1", {"Status": "sleepy"}).status_code == 400
    assert put(http, "/v1/agent/service/deregister/o1").status_code == 200
    assert health(http).json() == []


def test_deregister_critical_service_after_reaps_the_service(http, server):
    put(
        http,
        "/v1/agent/service/register",
        {
            "Name": "orders",
            "ID": "o1",
            "Port": 1,
            "Check": {
                "TTL": "100ms",
                "Status": "passing",
                "DeregisterCriticalServiceAfter": "100ms",
            },
        },
    )
    assert server.service_ids() == ["o1"]
    wait_until(lambda: server.service_ids() == [])
    assert health(http).json() == []


def test_real_consul_minimum_for_deregister_after_is_the_default():
    with ConsulTestServer(reap_interval=0.05) as srv, httpx.Client(base_url=srv.url) as http:
        put(
            http,
            "/v1/agent/service/register",
            {
                "Name": "orders",
                "ID": "o1",
                "Port": 1,
                "Check": {"TTL": "60s", "DeregisterCriticalServiceAfter": "10ms"},
            },
        )
        time.sleep(0.3)  # several reaper runs: the 1 min floor keeps the service
        assert srv.service_ids() == ["o1"]


def test_catalog_endpoints(http):
    put(
        http,
        "/v1/agent/service/register",
        {"Name": "orders", "ID": "o1", "Port": 9, "Tags": ["v2"]},
    )
    services = http.get("/v1/catalog/services")
    assert services.json() == {"consul": [], "orders": ["v2"]}
    assert int(services.headers["X-Consul-Index"]) >= 1
    (row,) = http.get("/v1/catalog/service/orders").json()
    assert (row["ServiceID"], row["ServicePort"], row["ServiceTags"]) == ("o1", 9, ["v2"])
    assert row["ServiceWeights"] == {"Passing": 1, "Warning": 1}
    assert {"Node", "Address", "Datacenter", "NodeMeta", "CreateIndex", "ModifyIndex"} <= set(row)


def test_acl_tokens_from_header_bearer_and_query():
    tokens = {"w-secret": "write", "r-secret": "read", "n-secret": "none"}
    with ConsulTestServer(acl_tokens=tokens) as srv:
        http = httpx.Client(base_url=srv.url)
        register = {"Name": "orders", "ID": "o1", "Port": 1}
        denied = put(
            http, "/v1/agent/service/register", register, headers={"X-Consul-Token": "r-secret"}
        )
        assert denied.status_code == 403
        assert "lacks permission 'service:write' on \"orders\"" in denied.text
        assert (
            put(
                http,
                "/v1/agent/service/register",
                register,
                headers={"Authorization": "Bearer w-secret"},
            ).status_code
            == 200
        )
        assert len(health(http, token="r-secret").json()) == 1
        assert (
            len(
                http.get("/v1/health/service/orders", headers={"X-Consul-Token": "r-secret"}).json()
            )
            == 1
        )
        unknown = http.get("/v1/health/service/orders", headers={"X-Consul-Token": "nope"})
        assert (unknown.status_code, unknown.text) == (403, "ACL not found")
        anonymous = health(http)  # reads are filtered, not refused
        assert anonymous.status_code == 200
        assert anonymous.json() == []
        # Consul masks the header for the anonymous token; a real token that sees less gets it
        assert "X-Consul-Results-Filtered-By-ACLs" not in anonymous.headers
        blind = health(http, token="n-secret")
        assert blind.json() == []
        assert blind.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        http.close()


def test_knobs_fail_slow_malformed_down_up(http, server):
    server.fail_next(2, 503)
    assert [health(http).status_code for _ in range(3)] == [503, 503, 200]
    server.malformed_next(1)
    broken = health(http)
    assert broken.status_code == 200
    assert "X-Consul-Index" in broken.headers
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)
    assert health(http).json() == []
    server.slow(0.05)
    assert health(http).status_code == 200
    server.slow(0)
    put(http, "/v1/agent/service/register", {"Name": "orders", "Port": 1})
    server.down()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/v1/health/service/orders")
    server.up()
    assert len(health(http).json()) == 1  # same port, state kept


def test_down_cuts_a_pending_blocking_query(http, server):
    index = health(http).headers["X-Consul-Index"]
    threading.Timer(0.1, server.down).start()
    with pytest.raises(httpx.TransportError):
        health(http, index=index, wait="30s")
