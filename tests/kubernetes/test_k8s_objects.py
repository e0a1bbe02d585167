"""EndpointSlice / Endpoints → instances, and the list/watch state machine (no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbclient import ConfigurationError, RegistryUnavailable
from lbclient.kubernetes._listwatch import Action, ListWatch
from lbclient.kubernetes._objects import Selection, endpoints_instances, slice_instances
from lbclient.testing.kubernetes import endpoint


def make_slice(
    name: str,
    endpoints: list[dict[str, Any]] | None,
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1"},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "appProtocol": "http"}]
        if ports is None
        else ports,
    }


def addresses(selection: Selection, slices: list[dict[str, Any]]) -> list[str]:
    return [i.address for i in slice_instances(selection, slices)]


ORDERS = Selection("orders", "http")


def test_conditions_null_ready_means_ready_not_ready_and_terminating_are_left_out() -> None:
    slices = [
        make_slice(
            "s",
            [
                endpoint("10.0.0.1", ready=None),
                endpoint("10.0.0.2", ready=True),
                endpoint("10.0.0.3", ready=False),
                endpoint("10.0.0.4", ready=False, serving=True, terminating=True),
            ],
        )
    ]
    assert addresses(ORDERS, slices) == ["10.0.0.1:8080", "10.0.0.2:8080"]


def test_terminating_but_serving_endpoints_are_a_last_resort_only_when_asked() -> None:
    draining = [
        endpoint("10.0.0.1", ready=False, serving=True, terminating=True),
        endpoint("10.0.0.2", ready=False, serving=False, terminating=True),
    ]
    fallback = Selection("orders", "http", fallback_to_terminating=True)
    assert addresses(ORDERS, [make_slice("s", draining)]) == []
    (only,) = slice_instances(fallback, [make_slice("s", draining)])
    assert only.address == "10.0.0.1:8080"
    assert only.metadata["terminating"] == "true"
    # As soon as one endpoint is ready, terminating ones are no longer used.
    mixed = [make_slice("s", draining), make_slice("t", [endpoint("10.0.0.9")])]
    assert addresses(fallback, mixed) == ["10.0.0.9:8080"]


def test_zone_node_and_target_ref_go_into_the_instance() -> None:
    slices = [make_slice("s", [endpoint("10.0.0.1", zone="eu-1a", node="n1", pod="web-1")])]
    (instance,) = slice_instances(ORDERS, slices)
    assert instance.zone == "eu-1a"
    assert instance.metadata["node"] == "n1"
    assert instance.metadata["pod"] == "web-1"
    assert instance.metadata["slice"] == "s"
    assert instance.scheme == "http"


def test_ipv6_and_fqdn_address_types() -> None:
    v6 = make_slice("v6", [endpoint("fd00::1")], address_type="IPv6")
    fqdn = make_slice("dns", [endpoint("db.example.com")], address_type="FQDN")
    assert sorted(addresses(ORDERS, [v6, fqdn])) == ["[fd00::1]:8080", "db.example.com:8080"]


def test_port_by_name_by_number_or_the_only_one() -> None:
    ports = [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}]
    slices = [make_slice("s", [endpoint("10.0.0.1")], ports)]
    assert addresses(Selection("orders", "grpc"), slices) == ["10.0.0.1:9090"]
    assert addresses(Selection("orders", 8080), slices) == ["10.0.0.1:8080"]
    assert addresses(Selection("orders", "9090"), slices) == ["10.0.0.1:9090"]
    with pytest.raises(ConfigurationError, match="several ports"):
        slice_instances(Selection("orders"), slices)
    with pytest.raises(ConfigurationError, match="no port 'metrics'"):
        slice_instances(Selection("orders", "metrics"), slices)
    single = [make_slice("s", [endpoint("10.0.0.1")])]
    assert addresses(Selection("orders"), single) == ["10.0.0.1:8080"]


def test_empty_slices_with_null_endpoints_and_ports_give_nothing() -> None:
    assert slice_instances(ORDERS, [make_slice("s", None, None)]) == ()
    empty = make_slice("s", None)
    empty["ports"] = None
    assert slice_instances(ORDERS, [empty]) == ()


endpoint_specs = st.lists(
    st.tuples(st.integers(1, 40), st.sampled_from([True, False, None])), max_size=30
)


@given(endpoint_specs, st.integers(1, 5))
def test_merging_does_not_depend_on_how_endpoints_are_split_into_slices(
    specs: list[tuple[int, bool | None]], parts: int
) -> None:
    """A service split over several slices (at 100/1000, or during a migration) is one list."""
    endpoints = [endpoint(f"10.0.0.{n}", ready=ready) for n, ready in specs]
    whole = slice_instances(ORDERS, [make_slice("all", endpoints)])
    split = [make_slice(f"s{i}", endpoints[i::parts]) for i in range(parts)]
    merged = slice_instances(ORDERS, split)
    assert [i.id for i in merged] == [i.id for i in whole]
    assert len({i.id for i in merged}) == len(merged)  # an endpoint in two slices counts once


def test_legacy_endpoints_use_ready_addresses_only() -> None:
    obj = {
        "metadata": {"name": "orders", "namespace": "shop"},
        "subsets": [
            {
                "addresses": [{"ip": "10.0.0.1", "nodeName": "n1"}],
                "notReadyAddresses": [{"ip": "10.0.0.2"}],
                "ports": [{"name": "http", "port": 8080}],
            }
        ],
    }
    (instance,) = endpoints_instances(ORDERS, [obj])
    assert instance.address == "10.0.0.1:8080"
    assert instance.metadata["node"] == "n1"


# -- the state machine -----------------------------------------------------------------------


def state() -> ListWatch:
    return ListWatch("orders", lambda objs: slice_instances(ORDERS, objs))


def listed(lw: ListWatch, version: int, *slices: dict[str, Any]) -> None:
    lw.listed(json.dumps({"metadata": {"resourceVersion": str(version)}, "items": list(slices)}))


def event(type_: str, obj: dict[str, Any], version: int) -> str:
    obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(version)}}
    return json.dumps({"type": type_, "object": obj})


def test_list_then_watch_from_the_list_version_then_events_change_the_list() -> None:
    lw = state()
    assert lw.next_action() is Action.LIST
    listed(lw, 10, make_slice("a", [endpoint("10.0.0.1")]))
    assert [i.address for i in lw.take_changes() or ()] == ["10.0.0.1:8080"]
    assert lw.next_action() is Action.WATCH
    assert lw.resource_version == "10"
    lw.opened(object())
    assert lw.next_action() is Action.READ
    lw.received(event("ADDED", make_slice("b", [endpoint("10.0.0.2")]), 11))
    assert len(lw.take_changes() or ()) == 2
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}
    lw.received(json.dumps(bookmark))
    assert lw.take_changes() is None
    assert lw.resource_version == "15"
    lw.received(event("DELETED", make_slice("a", None), 16))
    assert [i.address for i in lw.take_changes() or ()] == ["10.0.0.2:8080"]


def test_error_410_event_means_list_again_and_the_new_list_replaces_the_cache() -> None:
    lw = state()
    listed(lw, 10, make_slice("a", [endpoint("10.0.0.1")]))
    lw.take_changes()
    lw.opened(object())
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    lw.received(json.dumps(expired))
    assert lw.next_action() is Action.LIST
    assert lw.stream is None
    listed(lw, 20, make_slice("b", [endpoint("10.0.0.2")]))
    assert [i.address for i in lw.take_changes() or ()] == ["10.0.0.2:8080"]
    assert lw.next_action() is Action.WATCH
    assert lw.resource_version == "20"


def test_a_stream_that_ends_is_reopened_from_the_last_version_without_a_list() -> None:
    lw = state()
    listed(lw, 10)
    lw.opened(object())
    lw.received(json.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}))
    lw.received(None)
    assert lw.next_action() is Action.WATCH
    assert lw.resource_version == "12"
    assert lw.lists == 1
    lw.opened(object())
    lw.received(None)  # ended at once: tolerated once (a server-side timeout may be short)...
    lw.opened(object())
    with pytest.raises(RegistryUnavailable):
        lw.received(None)  # ...but not twice in a row: back off instead of spinning
    lw.opened(object())
    with pytest.raises(RegistryUnavailable, match="ConnectionResetError"):
        lw.broken(ConnectionResetError())  # broke before delivering anything: an error


def test_other_watch_errors_surface_as_registry_unavailable() -> None:
    lw = state()
    listed(lw, 10)
    lw.opened(object())
    failure = {"type": "ERROR", "object": {"code": 500, "reason": "InternalError"}}
    with pytest.raises(RegistryUnavailable, match="500"):
        lw.received(json.dumps(failure))
