"""The no-I/O parts: keys, values, watch messages, URIs and the registrar's state machine."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from lbclient_etcd import EtcdRegistry, RegistrarCore, decode_instance, encode_instance
from lbclient_etcd._protocol import (
    LeaseNotFound,
    Snapshot,
    b64,
    check,
    prefix_end,
    service_prefix,
    watch_step,
)

import lbclient
from lbclient import ConfigurationError, RegistryAccessDenied, RegistryUnavailable, ServiceInstance


def test_prefix_end_covers_exactly_the_prefix() -> None:
    assert prefix_end(b"/services/orders/") == b"/services/orders0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_service_prefix_keeps_similar_names_apart() -> None:
    assert service_prefix("/services/", "orders") == b"/services/orders/"
    with pytest.raises(ConfigurationError):
        service_prefix("/services", "a/b")


def test_instance_round_trip() -> None:
    instance = ServiceInstance(
        "orders",
        "10.0.0.1",
        8080,
        id="x1",
        weight=2,
        zone="eu",
        tags={"v2"},
        metadata={"k": "v"},
        scheme="https",
        priority=2,
    )
    assert decode_instance("orders", "x1", encode_instance(instance)) == instance


def test_priority_in_a_value_is_a_failover_level() -> None:
    value = b'{"host": "h", "port": 1, "priority": 3}'
    assert decode_instance("orders", "x", value).priority == 3
    with pytest.raises(lbclient.ConfigurationError, match="priority"):
        decode_instance("orders", "x", b'{"host": "h", "port": 1, "priority": 300}')


def test_grpc_go_naming_values_are_understood() -> None:
    value = json.dumps({"Op": 0, "Addr": "10.0.0.2:9000", "Metadata": {"a": 1}}).encode()
    instance = decode_instance("orders", "10.0.0.2:9000", value)
    assert (instance.host, instance.port, dict(instance.metadata)) == ("10.0.0.2", 9000, {"a": "1"})


def test_bad_values_are_skipped_not_fatal() -> None:
    answer = {
        "header": {"revision": "7"},
        "kvs": [
            {"key": b64(b"/s/o/good"), "value": b64(b'{"host": "h", "port": 1}')},
            {"key": b64(b"/s/o/bad"), "value": b64(b"not json")},
        ],
    }
    snapshot = Snapshot.from_range("o", b"/s/o/", answer)
    assert [i.id for i in snapshot.ordered] == ["good"]
    assert snapshot.revision == 7
    (skipped,) = snapshot.ordered.skipped  # counted; the balancer logs it once
    assert skipped.entry == "etcd key '/s/o/bad'"
    assert "not JSON" in skipped.reason


def _snapshot() -> Snapshot:
    return Snapshot("o", b"/s/o/", 10, {})


def test_watch_events_put_and_delete() -> None:
    put = {
        "kv": {"key": b64(b"/s/o/a"), "value": b64(b'{"host":"h","port":1}'), "mod_revision": "11"}
    }
    step = watch_step(_snapshot(), {"result": {"events": [put]}})
    assert step.changed
    assert step.snapshot.revision == 11
    assert len(step.snapshot.ordered) == 1
    delete = {"type": "DELETE", "kv": {"key": b64(b"/s/o/a"), "mod_revision": "12"}}
    step = watch_step(step.snapshot, {"result": {"events": [delete]}})
    assert step.changed
    assert step.snapshot.ordered == ()
    assert step.snapshot.revision == 12


def test_watch_created_progress_and_compaction() -> None:
    assert not watch_step(_snapshot(), {"result": {"created": True}}).changed
    progress = watch_step(_snapshot(), {"result": {"header": {"revision": "40"}}})
    assert not progress.changed
    assert progress.snapshot.revision == 40
    compacted = {"result": {"canceled": True, "compact_revision": "30"}}
    assert watch_step(_snapshot(), compacted).compacted
    with pytest.raises(RegistryUnavailable, match="canceled"):
        watch_step(_snapshot(), {"result": {"canceled": True, "cancel_reason": "x"}})


def test_gateway_errors_map_to_lbclient_errors() -> None:
    with pytest.raises(LeaseNotFound):
        check(404, b'{"error":"etcdserver: requested lease not found","code":5}', "put")
    with pytest.raises(RegistryAccessDenied, match="permission"):
        check(401, b'{"error":"etcdserver: user name is empty","code":16}', "range")
    with pytest.raises(RegistryUnavailable, match="not JSON"):
        check(502, b"<html>bad gateway</html>", "range")


def test_uri_forms() -> None:
    registry = EtcdRegistry.from_uri(urlsplit("etcd://10.0.0.1,10.0.0.2:2380/apps?timeout=2"))
    assert registry.http.endpoints.urls == ("http://10.0.0.1:2379", "http://10.0.0.2:2380")
    assert registry.prefix == "/apps"
    assert registry.http.timeout == 2
    assert EtcdRegistry.from_uri(urlsplit("etcd://h?tls=1")).http.endpoints.urls == (
        "https://h:2379",
    )
    assert EtcdRegistry.from_uri(urlsplit("etcd://[::1]:1234")).prefix == "/services"
    with pytest.raises(ConfigurationError, match="unknown etcd URI option"):
        EtcdRegistry.from_uri(urlsplit("etcd://h?bogus=1"))
    with pytest.raises(ConfigurationError, match="credentials"):
        EtcdRegistry.from_uri(urlsplit("etcd://user:secret@h"))


def test_registrar_core_recovers_a_lost_lease() -> None:
    core = RegistrarCore(b"/s/o/a", ServiceInstance("o", "h", 1), ttl=3)
    grant = core.next_call()
    assert grant[0] == "/v3/lease/grant"
    assert core.answered(grant, {"ID": "42"}) == 0
    put = core.next_call()
    assert put[0] == "/v3/kv/put"
    assert put[1]["lease"] == "42"
    assert core.answered(put, {}) == pytest.approx(1.0)
    keepalive = core.next_call()
    assert keepalive[0] == "/v3/lease/keepalive"
    assert core.answered(keepalive, {"result": {"ID": "42", "TTL": "3"}}) == pytest.approx(1.0)
    assert core.answered(keepalive, {"result": {"ID": "42"}}) == 0  # no TTL: expired
    assert core.next_call()[0] == "/v3/lease/grant"
    assert 0 < core.failed(RegistryUnavailable("down")) <= 1.0
    with pytest.raises(ConfigurationError):
        RegistrarCore(b"k", ServiceInstance("o", "h", 1), ttl=1)
