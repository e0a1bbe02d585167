"""ConsulTestServer driven by the official client, py-consul, sync and ``consul.aio``: every
endpoint and parameter the server claims, as the client sends it. What py-consul cannot send
(headers, methods, Enterprise parameters) is checked over raw HTTP at the end."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import consul
import consul.aio
import consul.exceptions
import pytest
from consul_helpers import wait_until

from lbclient.testing.consul import ANONYMOUS_ACCESSOR, ConsulTestServer


@pytest.fixture
def fast() -> Iterator[ConsulTestServer]:
    """A server whose deferred output syncs happen within a fraction of a second."""
    with ConsulTestServer(node_meta={"rack": "r1"}, check_update_interval=0.2) as srv:
        yield srv


def client(server: ConsulTestServer, **kw: Any) -> Any:
    return consul.Consul(host=server.host, port=server.port, **kw)


def register_web(c: Any) -> None:
    c.agent.service.register(
        "web",
        service_id="web-1",
        address="10.0.0.1",
        port=80,
        tags=["v1", "EU"],
        meta={"zone": "z1"},
        weights={"passing": 3, "warning": 1},
        tagged_addresses={
            "lan": {"address": "10.0.0.1", "port": 80},
            "wan_ipv4": {"address": "198.18.0.1", "port": 8080},
        },
        locality={"region": "eu-west", "zone": "eu-west-1a"},
        check={"CheckID": "web-ttl", "TTL": "60s", "Status": "passing"},
    )
    c.agent.service.register(
        "web-sidecar-proxy",
        service_id="web-1-proxy",
        port=21000,
        kind="connect-proxy",
        proxy={
            "destination_service_name": "web",
            "local_service_port": 80,
            "upstreams": [{"destination_name": "db", "local_bind_port": 9191}],
        },
    )


def test_registration_fields_come_back_canonical_from_health_and_catalog(agent):
    register_web(agent)
    _, (entry,) = agent.health.service("web")
    service = entry["Service"]
    assert service["TaggedAddresses"] == {
        "lan": {"Address": "10.0.0.1", "Port": 80},
        "wan_ipv4": {"Address": "198.18.0.1", "Port": 8080},
    }
    assert service["Locality"] == {"Region": "eu-west", "Zone": "eu-west-1a"}
    assert service["Weights"] == {"Passing": 3, "Warning": 1}
    assert service["Proxy"] == {"Mode": "", "MeshGateway": {}, "Expose": {}}
    assert (service["Connect"], service["PeerName"]) == ({}, "")
    _, (proxy,) = agent.health.service("web-sidecar-proxy")
    assert proxy["Service"]["Kind"] == "connect-proxy"
    assert proxy["Service"]["Proxy"]["DestinationServiceName"] == "web"
    assert proxy["Service"]["Proxy"]["LocalServicePort"] == 80
    assert proxy["Service"]["Proxy"]["Upstreams"] == [
        {"DestinationName": "db", "LocalBindPort": 9191}
    ]
    _, (row,) = agent.catalog.service("web")
    assert row["ServiceTaggedAddresses"]["lan"] == {"Address": "10.0.0.1", "Port": 80}
    assert row["ServiceLocality"] == {"Region": "eu-west", "Zone": "eu-west-1a"}
    _, (proxy_row,) = agent.catalog.service("web-sidecar-proxy")
    assert proxy_row["ServiceProxy"]["DestinationServiceName"] == "web"


def test_health_service_parameters(agent):
    register_web(agent)
    agent.agent.service.register(
        "web", service_id="web-2", port=81, tags=["v2"], check={"TTL": "60s"}
    )  # critical until its first pass
    ids = lambda result: sorted(e["Service"]["ID"] for e in result[1])  # noqa: E731
    assert ids(agent.health.service("web")) == ["web-1", "web-2"]
    assert ids(agent.health.service("web", passing=True)) == ["web-1"]
    assert ids(agent.health.service("web", tag="eu")) == ["web-1"]
    assert ids(agent.health.service("web", tag=["v1", "EU"])) == ["web-1"]
    assert ids(agent.health.service("web", dc="dc1", near="_agent")) == ["web-1", "web-2"]
    assert ids(agent.health.service("web", node_meta={"rack": "r1"})) == ["web-1", "web-2"]
    assert ids(agent.health.service("web", node_meta={"rack": "r9"})) == []
    assert ids(agent.health.service("web", filter_expr='Service.Meta.zone == "z1"')) == ["web-1"]
    assert ids(agent.health.service("web", peer="cluster-02")) == []  # no such peering
    assert ids(agent.health.service("web", merge_central_config=True)) == ["web-1", "web-2"]
    with pytest.raises(consul.ConsulException, match="No path to datacenter"):
        agent.health.service("web", dc="dc9")
    with pytest.raises(consul.exceptions.BadRequest, match="boolean expression"):
        agent.health.service("web", filter_expr="Service.ID ===")


def test_blocking_health_query_wakes_on_a_status_change(agent, server):
    register_web(agent)
    index, _ = agent.health.service("web")
    threading.Timer(0.1, agent.agent.check.ttl_fail, ("web-ttl", "down")).start()
    new_index, (entry,) = agent.health.service("web", index=index, wait="20s")
    assert int(new_index) > int(index)
    assert entry["Checks"][1]["Status"] == "critical"
    assert entry["Checks"][1]["Output"] == "down"


def test_output_only_updates_reach_the_catalog_after_check_update_interval(fast):
    agent = client(fast)
    register_web(agent)
    index, _ = agent.health.service("web")
    assert agent.agent.check.ttl_pass("web-ttl", notes="still fine") is True
    assert fast.check("web-ttl")["Output"] == "still fine"  # the agent knows at once
    _, (entry,) = agent.health.service("web")
    assert entry["Checks"][1]["Output"] == ""  # the catalog not yet
    new_index, (entry,) = agent.health.service("web", index=index, wait="20s")
    assert int(new_index) > int(index)  # the deferred sync is a catalog write
    assert entry["Checks"][1]["Output"] == "still fine"


def test_output_only_updates_stay_deferred_by_default(agent, server):
    register_web(agent)
    agent.agent.check.ttl_pass("web-ttl", notes="quiet change")
    _, (entry,) = agent.health.service("web")
    assert entry["Checks"][1]["Output"] == ""  # Consul: 5 min check_update_interval
    agent.agent.check.ttl_warn("web-ttl", notes="now warning")  # a status change: at once
    _, (entry,) = agent.health.service("web")
    assert (entry["Checks"][1]["Status"], entry["Checks"][1]["Output"]) == (
        "warning",
        "now warning",
    )


def test_catalog_services_and_service_parameters(agent):
    register_web(agent)
    _, services = agent.catalog.services()
    assert services == {"consul": [], "web": ["v1", "EU"], "web-sidecar-proxy": []}
    _, services = agent.catalog.services(filter_expr='ServiceName == "web"')
    assert services == {"web": ["v1", "EU"]}
    _, services = agent.catalog.services(node_meta={"rack": "r9"})
    assert services == {}
    index, services = agent.catalog.services(consistency="stale")
    assert "web" in services
    threading.Timer(0.1, agent.agent.service.deregister, ("web-1-proxy",)).start()
    new_index, services = agent.catalog.services(index=index, wait="20s")
    assert int(new_index) > int(index)
    assert "web-sidecar-proxy" not in services
    ids = lambda result: [r["ServiceID"] for r in result[1]]  # noqa: E731
    assert ids(agent.catalog.service("web", tag="v1")) == ["web-1"]
    assert ids(agent.catalog.service("web", tag="v9")) == []
    assert ids(agent.catalog.service("web", filter_expr="ServicePort == 81")) == []
    assert ids(agent.catalog.service("web", filter_expr='ServiceMeta.zone == "z1"')) == ["web-1"]
    assert ids(agent.catalog.service("web", peer="cluster-02")) == []
    assert ids(agent.catalog.service("web", node_meta={"rack": "r1"})) == ["web-1"]
    assert ids(agent.catalog.service("web", node_meta={"rack": "r9"})) == []


def test_agent_check_endpoints_and_unknown_ids(agent, server):
    register_web(agent)
    assert agent.agent.check.ttl_warn("web-ttl", notes="slow") is True
    assert server.check("web-ttl")["Status"] == "warning"
    assert agent.agent.check.ttl_fail("web-ttl") is True
    assert agent.agent.check.ttl_pass("web-ttl") is True
    assert agent.agent.check.ttl_pass("nope") is False  # 404: py-consul answers False
    assert agent.agent.service.deregister("nope") is False
    assert agent.agent.service.deregister("web-1") is True
    assert agent.health.service("web")[1] == []


def test_acl_order_and_wording_as_py_consul_sees_them():
    tokens = {"writer": "write", "reader": "read"}
    with ConsulTestServer(acl_tokens=tokens) as srv:
        writer, reader, anonymous = (
            client(srv, token="writer"),
            client(srv, token="reader"),
            client(srv),
        )
        register_web(writer)
        # Unknown IDs: 404 before any permission check, so False, not ACLPermissionDenied.
        assert reader.agent.service.deregister("nope") is False
        assert anonymous.agent.check.ttl_pass("nope") is False
        with pytest.raises(consul.ACLPermissionDenied) as denied:
            reader.agent.service.deregister("web-1")
        accessor = srv.accessor_id("reader")
        assert str(denied.value) == (
            f"Permission denied: token with AccessorID '{accessor}' lacks permission "
            "'service:write' on \"web\""
        )
        with pytest.raises(consul.ACLPermissionDenied) as denied:
            anonymous.agent.check.ttl_pass("web-ttl")
        assert str(denied.value) == (
            "Permission denied: anonymous token lacks permission 'service:write' on \"web\". "
            "The anonymous token is used implicitly when a request does not specify a token."
        )
        assert srv.accessor_id(None) == ANONYMOUS_ACCESSOR
        with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
            client(srv, token="forged").health.service("web")
        assert len(reader.health.service("web")[1]) == 1
        assert anonymous.health.service("web")[1] == []  # filtered, not refused
        assert anonymous.catalog.services()[1] == {}


async def test_the_aio_client_drives_the_same_endpoints(server):
    c = consul.aio.Consul(host=server.host, port=server.port)
    try:
        assert await c.agent.service.register(
            "web",
            service_id="web-1",
            port=80,
            tagged_addresses={"lan": {"address": "10.0.0.1", "port": 80}},
            check={"CheckID": "web-ttl", "TTL": "60s"},
        )
        index, entries = await c.health.service("web", passing=True)
        assert entries == []
        assert await c.agent.check.ttl_pass("web-ttl") is True
        new_index, entries = await c.health.service("web", passing=True, index=index, wait="20s")
        assert int(new_index) > int(index)
        assert entries[0]["Service"]["TaggedAddresses"]["lan"] == {
            "Address": "10.0.0.1",
            "Port": 80,
        }
        _, services = await c.catalog.services(filter_expr='ServiceName != "consul"')
        assert services == {"web": []}
        _, rows = await c.catalog.service("web", peer="elsewhere")
        assert rows == []
        assert await c.agent.check.ttl_warn("nope") is False
        assert await c.agent.service.deregister("web-1") is True
    finally:
        await c.http.close()


# -- what the client cannot send: raw HTTP ---------------------------------------------------


def raw(
    server: ConsulTestServer, method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request(method, path, body=body or None, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), payload


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/agent/service/register", "OPTIONS,PUT"),
        ("PATCH", "/v1/agent/check/pass/x", "OPTIONS,PUT"),
        ("DELETE", "/v1/health/service/web", "OPTIONS,GET"),
        ("BREW", "/v1/catalog/services", "OPTIONS,GET"),
    ],
)
def test_wrong_methods_get_405_with_allow(server, method, path, allow):
    code, headers, body = raw(server, method, path)
    assert (code, headers["Allow"], body) == (405, allow, f"method {method} not allowed".encode())


def test_options_answers_200_with_allow(server):
    code, headers, body = raw(server, "OPTIONS", "/v1/agent/service/deregister/x")
    assert (code, headers["Allow"], body) == (200, "OPTIONS,PUT", b"")


def test_effective_consistency_and_the_cache_header(server):
    for params, expected in (
        ("", "leader"),
        ("?stale", "stale"),
        ("?max_stale=5s", "stale"),
        ("?consistent", "consistent"),
    ):
        _, headers, _ = raw(server, "GET", f"/v1/health/service/web{params}")
        assert headers["X-Consul-Effective-Consistency"] == expected
    _, headers, _ = raw(server, "GET", "/v1/catalog/services?cached")
    assert headers["X-Cache"] == "MISS"
    code, _, body = raw(server, "GET", "/v1/catalog/services?max_stale=soon")
    assert (code, body) == (400, b'Invalid max_stale value "soon"')


def test_token_precedence_and_unknown_paths():
    with ConsulTestServer(acl_tokens={"reader": "read"}) as srv:
        srv.state.register(
            {"ID": "w", "Service": "web", "Tags": [], "Address": "", "Port": 1, "Meta": {},
             "Weights": {"Passing": 1, "Warning": 1}, "TaggedAddresses": {},
             "EnableTagOverride": False, "Kind": ""},
            [],
            replace=False,
        )  # fmt: skip
        # ?token wins over the header, as in Consul's parseToken
        code, _, body = raw(
            srv, "GET", "/v1/health/service/web?token=reader", **{"X-Consul-Token": "forged"}
        )
        assert (code, len(json.loads(body))) == (200, 1)
        code, _, body = raw(srv, "GET", "/v1/kv/some/key")
        assert (code, body) == (404, b"")


@pytest.mark.parametrize(
    ("path", "headers", "text"),
    [
        ("/v1/health/service/web?ns=team", {}, 'Invalid query parameter: "ns" - Namespaces'),
        ("/v1/catalog/services?partition=p", {}, 'Invalid query parameter: "partition"'),
        ("/v1/catalog/services", {"X-Consul-Namespace": "team"}, 'Invalid header: "X-Consul-N'),
    ],
)
def test_enterprise_parameters_are_refused_as_consul_ce_does(server, path, headers, text):
    code, _, body = raw(server, "GET", path, **headers)
    assert code == 400
    assert body.decode().startswith(f"Bad request: {text}")
    assert body.decode().endswith("a Consul Enterprise feature")


def test_a_refused_request_with_a_body_leaves_the_connection_usable(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request("POST", "/v1/agent/service/register", body=b'{"Name": "web", "Port": 1}')
    refused = conn.getresponse()
    assert (refused.status, refused.read()) == (405, b"method POST not allowed")
    conn.request("GET", "/v1/catalog/services")  # the same kept-alive connection
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b'{"consul": []}')
    conn.close()


def test_check_update_endpoint_with_a_chunked_body(server, agent):
    register_web(agent)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request(
        "PUT",
        "/v1/agent/check/update/web-ttl",
        body=iter([b'{"Status": "warning", ', b'"Output": "half"}']),
        encode_chunked=True,
    )
    assert conn.getresponse().read() == b""
    conn.request("GET", "/v1/health/service/web")
    response = conn.getresponse()
    assert b'"Output": "half"' in response.read()
    conn.close()
    wait_until(lambda: server.check("web-ttl")["Status"] == "warning")
