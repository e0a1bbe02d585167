"""Consul health answers read entry by entry: a malformed entry is skipped and counted, the
others apply; only an answer malformed as a whole keeps the last good list. Fuzzed with
hypothesis, plus the reproduced cases of issue 10 (``Port: "8080"``, ``Node: null``,
``Weights.Passing: -1``, ``Tags: "abc"``) and one end-to-end run through ConsulTestServer."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient._answer import Instances
from lbclient.consul import ConsulRegistry
from lbclient.consul._health import HealthQuery
from lbclient.testing.consul import ConsulTestServer


def entry(n: int, **service: Any) -> dict[str, Any]:
    """A well-formed /v1/health/service entry for service ID ``s<n>`` on node ``node<n>``."""
    svc = {
        "ID": f"s{n}", "Service": "orders", "Address": f"10.0.0.{n + 1}", "Port": 8000 + n,
        "Tags": ["v2"], "Meta": {"version": "1"}, "Weights": {"Passing": 1 + n, "Warning": 1},
    }  # fmt: skip
    svc.update(service)
    return {
        "Node": {"Node": f"node{n}", "Address": "10.1.0.1", "Meta": {"rack": "r1"}},
        "Service": svc,
        "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""}],
    }


def read(entries: Any) -> Instances:
    instances, _ = HealthQuery().read("orders", ("5", entries), None)
    assert isinstance(instances, Instances)
    return instances


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("Service", "Port"), "8080"),
        (("Node",), None),
        (("Service", "Weights", "Passing"), -1),
        (("Service", "Tags"), "abc"),
        (("Service", "Port"), 70000),
        (("Service", "Address"), "10.0.0.1:80:90"),
        (("Service", "Address"), "evil host"),
        (("Service", "Address"), "user@evil.example"),
        (("Service", "Address"), "h\r\nX-Injected: 1"),
        (("Service", "Address"), "x" * 100_000),
        (("Service", "Weights", "Passing"), 1e308),
        (("Service", "Weights", "Passing"), "1"),
        (("Service", "Meta"), {"scheme": 5}),
        (("Service", "ID"), 7),
        (("Checks",), "passing"),
        (("Service", "Port"), 0),
    ],
)
def test_one_malformed_entry_is_skipped_and_the_rest_applies(path: tuple[str, ...], value: Any):
    bad = entry(1)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    instances = read([entry(0), bad, entry(2)])
    assert sorted(i.id for i in instances) == ["s0", "s2"]
    (skipped,) = instances.skipped
    assert skipped.entry in ("s1", "#1")
    assert skipped.reason


def test_tags_string_is_not_split_into_letters() -> None:
    (instance,) = read([entry(0), entry(1, Tags="abc")])
    assert instance.tags == frozenset({"v2"})


def test_only_an_answer_malformed_as_a_whole_is_an_error() -> None:
    for whole in ({"not": "a list"}, "[]", None, 5):
        with pytest.raises(lbclient.RegistryUnavailable, match="malformed"):
            read(whole)
    with pytest.raises(lbclient.RegistryUnavailable, match="all 2 entries are invalid"):
        read([None, entry(1, Port="1")])  # nothing valid: no emptying the list on garbage
    assert read([]) == ()  # a valid, empty answer
    critical = entry(0)
    critical["Checks"][0]["Status"] = "critical"
    assert read([critical]) == ()  # dropped by Consul's rules, not malformed: no error
    assert read([critical]).skipped == ()


GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["8080", "abc", "::1", "h:80:90", "٨٠", "", "a b", "10.0.0.1"]),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
PATHS = st.sampled_from(
    [
        ("Node",), ("Service",), ("Checks",), ("Node", "Node"), ("Node", "Address"),
        ("Node", "Meta"), ("Service", "ID"), ("Service", "Address"), ("Service", "Port"),
        ("Service", "Tags"), ("Service", "Meta"), ("Service", "Weights"),
        ("Service", "Weights", "Passing"), ("Checks", 0), ("Checks", 0, "Status"),
        ("Checks", 0, "CheckID"),
    ]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    mutations=st.lists(st.tuples(PATHS, GARBAGE), max_size=3),
    valid=st.integers(min_value=0, max_value=4),
    whole=st.booleans(),
)
def test_fuzzed_answers_parse_entry_by_entry(
    mutations: list[tuple[tuple[Any, ...], Any]], valid: int, whole: bool
) -> None:
    good = [entry(n) for n in range(valid)]
    bad = []
    for m, (path, value) in enumerate(mutations):
        mutated: Any = entry(10 + m)
        target = mutated
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(value)
        except (KeyError, TypeError, IndexError):
            pass  # an earlier mutation replaced a parent: the entry is garbage anyway
        bad.append(mutated)
    entries = good + bad
    # through JSON, as py-consul hands it over
    entries = json.loads(json.dumps(entries, allow_nan=True))
    try:
        instances = read(entries)
    except lbclient.RegistryUnavailable as exc:
        error: Exception | None = exc
    else:
        error = None
    if error is not None:  # only when no entry at all is valid
        assert not good
        assert "malformed" in str(error)
        return
    # every valid entry survives (as "s0@node0" when a mutated entry reuses its service ID
    # on another node: Consul service IDs are unique per node only)
    found = {(i.id.partition("@")[0], i.metadata["consul.node"]) for i in instances}
    assert {(f"s{n}", f"node{n}") for n in range(valid)} <= found
    # each mutated entry is either still valid, dropped by Consul's rules, or skipped
    assert len(instances) + len(instances.skipped) <= len(entries)
    assert len(instances.skipped) <= len(bad)
    for instance in instances:
        assert lbclient.ServiceInstance("orders", instance.host, instance.port) is not None


def test_a_balancer_applies_the_good_entries_and_counts_the_bad(
    server: ConsulTestServer, agent: Any, caplog: Any
) -> None:
    agent.agent.service.register("orders", service_id="real", address="127.0.0.1", port=8001)
    body = json.dumps([entry(0), entry(1, Port="8080"), entry(2, Tags="abc")]).encode()
    server.malformed_next(1000, body=body)  # every answer, the watch's included
    registry = ConsulRegistry(port=server.port, min_backoff=0.02, max_backoff=0.2)
    with caplog.at_level(logging.WARNING, logger="lbclient"), lbclient.LoadBalancer(registry) as lb:
        state = lb.service("orders")
        state.publish(read(json.loads(body)))  # the same answer again: no second log line
        stats = lb.stats("orders")
    registry.close()
    assert sorted(row["id"] for row in stats["instances"]) == ["s0"]
    assert stats["skipped_entries"] == 2
    assert stats["registry_error"] is None
    assert caplog.text.count("registry entry s1 skipped") == 1
    assert caplog.text.count("registry entry s2 skipped") == 1
    assert "Service.Tags 'abc' is not an array of strings" in caplog.text


def test_a_hostile_entry_cannot_forge_a_log_line() -> None:
    bad = entry(1, ID="s1\nlbclient: all good", Address="h\r\nX: 1")
    (skipped,) = read([entry(0), bad]).skipped
    assert "\n" not in skipped.entry
    assert "\r" not in skipped.reason
    assert "\n" not in skipped.reason


def test_values_repeated_in_an_answer_are_kept_once() -> None:
    """100,000 instances must not hold 100,000 copies of what Consul repeats for each one
    (JSON gives every value a new object): tags, Service.Meta values, a shared address."""
    same_host = {"Address": "10.0.0.9", "Meta": {"version": "1"}, "Tags": ["v2"]}
    one, two = read([entry(1, **same_host), entry(2, **same_host)])
    assert one.tags is two.tags
    assert one.metadata["version"] is two.metadata["version"]
    assert one.host is two.host
    assert one.metadata["consul.health"] is two.metadata["consul.health"]
    again = read([entry(1, Address="", Tags=["v2"])])[0]
    assert again.tags is one.tags  # across answers too
    assert (again.host, again.port) == ("10.1.0.1", 8001)  # Node.Address
