"""EndpointSlices and Endpoints read entry by entry: a malformed slice, subset, endpoint or
address is skipped and counted, the others apply. Fuzzed with hypothesis, plus the reproduced
cases of issue 10 (``endpoints: "x"``, ``metadata: null``, ``ports: [null]``, ``addresses:
[null]`` that became host "None", ``addresses: "10.9.9.9"`` that became host "1") and an
end-to-end run through KubernetesTestServer with the real ``kubernetes`` client."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_support import TOKEN  # noqa: F401  (the conftest's server requires it)

import lbclient
from lbclient import RegistryUnavailable
from lbclient._answer import Instances
from lbclient.kubernetes import KubernetesRegistry
from lbclient.kubernetes._listwatch import ListWatch
from lbclient.kubernetes._objects import Selection, endpoints_instances, slice_instances
from lbclient.testing.kubernetes import KubernetesTestServer, endpoint

ORDERS = Selection("orders", "http")
PORTS = [{"name": "http", "port": 8080}]


def good_slice(name: str, *hosts: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "addressType": "IPv4",
        "endpoints": [endpoint(h) for h in hosts],
        "ports": copy.deepcopy(PORTS),
    }


def read(slices: list[Any]) -> Instances:
    return slice_instances(ORDERS, slices)


@pytest.mark.parametrize(
    "bad",
    [
        {**good_slice("bad", "10.0.0.9"), "endpoints": "x"},
        {**good_slice("bad", "10.0.0.9"), "metadata": None},
        {**good_slice("bad", "10.0.0.9"), "ports": [None]},
        {**good_slice("bad", "10.0.0.9"), "ports": [{"name": "http", "port": "8080"}]},
        None,
        "slice",
    ],
)
def test_one_malformed_slice_is_skipped_and_the_others_apply(bad: Any) -> None:
    instances = read([good_slice("a", "10.0.0.1"), bad, good_slice("c", "10.0.0.3")])
    assert [i.address for i in instances] == ["10.0.0.1:8080", "10.0.0.3:8080"]
    (skipped,) = instances.skipped
    assert "EndpointSlice" in skipped.entry


@pytest.mark.parametrize(
    "bad_endpoint",
    [
        {"addresses": [None]},  # was host "None"
        {"addresses": "10.9.9.9"},  # was host "1"
        {"addresses": ["10.0.0.1:80:90"]},
        {"addresses": ["evil host"]},
        {"addresses": ["10.0.0.9"], "conditions": "ready"},
        {"addresses": ["10.0.0.9"], "zone": 5},
        {"addresses": ["10.0.0.9"], "targetRef": ["pod"]},
        None,
    ],
)
def test_one_malformed_endpoint_is_skipped_and_the_others_apply(bad_endpoint: Any) -> None:
    mixed = good_slice("a", "10.0.0.1", "10.0.0.2")
    mixed["endpoints"].insert(1, bad_endpoint)
    instances = read([mixed])
    assert [i.host for i in instances] == ["10.0.0.1", "10.0.0.2"]
    (skipped,) = instances.skipped
    assert skipped.entry == "EndpointSlice a endpoint #1"
    assert "None" not in [i.host for i in instances]
    assert "1" not in [i.host for i in instances]


def test_only_garbage_is_a_malformed_answer_and_not_ready_is_not_garbage() -> None:
    with pytest.raises(RegistryUnavailable, match="all 2 entries are invalid"):
        read([{**good_slice("a"), "endpoints": "x"}, {"metadata": None}])
    not_ready = good_slice("a")
    not_ready["endpoints"] = [endpoint("10.0.0.1", ready=False)]
    assert read([not_ready]) == ()  # a valid empty list
    assert read([]) == ()


def test_several_ports_without_a_choice_is_still_a_configuration_error() -> None:
    two = {**good_slice("a", "10.0.0.1"), "ports": [{"name": "h", "port": 1}, {"port": 2}]}
    with pytest.raises(lbclient.ConfigurationError, match="several ports"):
        slice_instances(Selection("orders"), [two])


def test_legacy_endpoints_skip_bad_subsets_and_addresses() -> None:
    obj = {
        "metadata": {"name": "orders", "namespace": "shop"},
        "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": None}, "x"], "ports": PORTS},
            {"addresses": "10.9.9.9", "ports": PORTS},
            {"addresses": [{"ip": "10.0.0.2"}], "ports": [None]},
        ],
    }
    instances = endpoints_instances(ORDERS, [obj, {"metadata": None}])
    assert [i.address for i in instances] == ["10.0.0.1:8080"]
    assert len(instances.skipped) == 5


def test_a_nameless_listed_item_is_skipped_not_fatal() -> None:
    lw = ListWatch("orders", lambda objs: slice_instances(ORDERS, objs))
    items = [good_slice("a", "10.0.0.1"), {**good_slice("b", "10.0.0.2"), "metadata": None}]
    lw.listed(json.dumps({"metadata": {"resourceVersion": "3"}, "items": items}))
    changes = lw.take_changes()
    assert changes is not None
    assert [i.host for i in changes] == ["10.0.0.1"]
    assert len(changes.skipped) == 1  # type: ignore[attr-defined]
    lw.opened(object())
    with pytest.raises(RegistryUnavailable, match=r"without metadata\.name"):
        lw.received(json.dumps({"type": "ADDED", "object": {"metadata": None}}))
    assert lw.stream is None
    assert lw.next_action().value == "list"
    for garbage in (b"{not json", json.dumps([1, 2])):
        lw.opened(object())
        with pytest.raises(RegistryUnavailable, match="Kubernetes sent"):
            lw.received(garbage)
    with pytest.raises(RegistryUnavailable, match="not a List"):
        lw.listed(json.dumps({"items": "x", "metadata": {"resourceVersion": "1"}}))


GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["10.9.9.9", "x", "::1", "h:80:90", "٨٠", "http", ""]),
    st.lists(st.one_of(st.none(), st.text(max_size=8), st.integers()), max_size=3),
    st.dictionaries(st.sampled_from(["name", "port", "ip", "ready"]), st.none(), max_size=2),
)
SLICE_PATHS = st.sampled_from(
    [
        ("metadata",), ("metadata", "name"), ("endpoints",), ("ports",), ("ports", 0),
        ("ports", 0, "port"), ("ports", 0, "name"), ("endpoints", 0),
        ("endpoints", 0, "addresses"), ("endpoints", 0, "addresses", 0),
        ("endpoints", 0, "conditions"), ("endpoints", 0, "conditions", "ready"),
        ("endpoints", 0, "zone"), ("endpoints", 0, "nodeName"), ("endpoints", 0, "targetRef"),
        ("addressType",),
    ]
)  # fmt: skip


ENDPOINTS_PATHS = st.sampled_from(
    [
        ("metadata",), ("subsets",), ("subsets", 0), ("subsets", 0, "addresses"),
        ("subsets", 0, "addresses", 0), ("subsets", 0, "addresses", 0, "ip"),
        ("subsets", 0, "ports"), ("subsets", 0, "ports", 0, "port"),
    ]
)  # fmt: skip


def strings_in(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*map(strings_in, value)) if value else set()
    return set()


def mutate(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    target = obj
    try:
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(value)
    except (KeyError, TypeError, IndexError):
        pass  # an earlier mutation replaced a parent: garbage anyway
    return obj


@settings(max_examples=150, deadline=None)
@given(
    mutations=st.lists(st.lists(st.tuples(SLICE_PATHS, GARBAGE), max_size=2), max_size=3),
    valid=st.integers(min_value=0, max_value=3),
)
def test_fuzzed_slices_parse_entry_by_entry(
    mutations: list[list[tuple[tuple[Any, ...], Any]]], valid: int
) -> None:
    good = [good_slice(f"good{n}", f"10.0.0.{n + 1}") for n in range(valid)]
    bad = []
    for m, changes in enumerate(mutations):
        obj = good_slice(f"bad{m}", f"10.0.1.{m + 1}")
        for path, value in changes:
            obj = mutate(obj, path, value)
        bad.append(obj)
    slices = json.loads(json.dumps(good + bad))
    try:
        instances = read(slices)
    except lbclient.LBError as exc:
        error: Exception | None = exc
    else:
        error = None
    if error is not None:
        # all entries malformed, or the fuzzed slices lost the "http" port name
        assert not good
        assert "malformed" in str(error) or "has no port" in str(error)
        return
    hosts = {i.host for i in instances}
    assert {f"10.0.0.{n + 1}" for n in range(valid)} <= hosts  # every valid slice survives
    assert len(instances.skipped) <= sum(len(c) for c in mutations) * 2 + len(mutations)
    assert hosts <= strings_in(slices)  # nothing made up: no "None", no "1" from "10.9.9.9"


@settings(max_examples=100, deadline=None)
@given(
    mutations=st.lists(
        st.tuples(
            ENDPOINTS_PATHS,
            GARBAGE,
        ),
        max_size=3,
    )
)
def test_fuzzed_endpoints_parse_entry_by_entry(
    mutations: list[tuple[tuple[Any, ...], Any]],
) -> None:
    def obj(name: str, ip: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": ip}], "ports": copy.deepcopy(PORTS)}],
        }

    bad = obj("bad", "10.0.1.1")
    for path, value in mutations:
        bad = mutate(bad, path, value)
    instances = endpoints_instances(ORDERS, json.loads(json.dumps([obj("good", "10.0.0.1"), bad])))
    assert "10.0.0.1" in {i.host for i in instances}
    assert {i.host for i in instances} <= strings_in(bad) | {"10.0.0.1"}


def test_the_registry_applies_good_slices_and_counts_bad_ones(
    api: KubernetesTestServer, configuration: Any
) -> None:
    api.apply_slice("shop", "orders", "good", endpoints=[endpoint("10.0.0.1")], ports=PORTS)
    api.apply_slice(
        "shop",
        "orders",
        "bad",
        endpoints=[{"addresses": [None]}, {"addresses": "10.9.9.9"}, endpoint("10.0.0.2")],
        ports=PORTS,
    )
    registry = KubernetesRegistry("shop", port="http", configuration=configuration)
    with lbclient.LoadBalancer(registry) as lb:
        lb.service("orders")
        stats = lb.stats("orders")
    registry.close()
    assert sorted(row["address"] for row in stats["instances"]) == [
        "10.0.0.1:8080",
        "10.0.0.2:8080",
    ]
    assert stats["skipped_entries"] == 2
