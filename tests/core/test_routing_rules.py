"""The routing stage's pure parts: split cycles, Envoy's priority math, rules, settings."""

from __future__ import annotations

import collections
import threading
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import ConfigurationError, PickContext, ServiceInstance
from lbclient._endpoint import Endpoint
from lbclient.routing import (
    RoutedScheduler,
    Router,
    Routes,
    SubsetRouter,
    plan_priorities,
    priority_loads,
    request_header,
    smooth_cycle,
)
from lbclient.routing.locality import (
    zone_shares,
)


def static(rows: list[dict[str, Any]], **settings: Any) -> lbclient.LoadBalancer:
    return lbclient.LoadBalancer({"s": rows}, **settings)


def picks(lb: lbclient.LoadBalancer, count: int, context: PickContext | None = None) -> Any:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        with lb.pick("s", context) as handle:
            seen[handle.instance.id] += 1
    return seen


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 300), min_size=1))
def test_smooth_cycle_holds_each_weight_and_spreads_it(weights: dict[str, int]) -> None:
    cycle = smooth_cycle(weights)
    if not any(weights.values()):
        assert cycle == ()
        return
    counts = collections.Counter(cycle)
    total = sum(weights.values())
    for key, weight in weights.items():
        assert counts[key] * total == weight * len(cycle)  # exact shares per cycle
        # Smooth: every prefix stays close to its ideal share (within one pick when two
        # subsets split, as a canary does).
        bound = 1 if len([w for w in weights.values() if w]) <= 2 else len(weights)
        running = 0
        for index, chosen in enumerate(cycle, 1):
            running += chosen == key
            assert abs(running - index * weight / total) < bound + 1e-9


def test_canary_split_over_ten_thousand_requests() -> None:
    rows = [
        {"address": f"127.0.0.1:{9000 + i}", "metadata": {"version": "v2" if i == 3 else "v1"}}
        for i in range(4)
    ]
    lb = static(rows, routers=[SubsetRouter("version", split={"v1": 95, "v2": 5})])
    seen = picks(lb, 10_000)
    canary = seen["127.0.0.1:9003"] / 10_000 * 100
    assert abs(canary - 5) <= 1.5
    lb.close()


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ({0: (1, 2), 1: (2, 2)}, {0: 70, 1: 30}),  # Envoy's example: 50% healthy
        ({0: (5, 7), 1: (2, 2)}, {0: 100, 1: 0}),  # ~71.4%: still everything
        ({0: (7, 10), 1: (4, 4)}, {0: 98, 1: 2}),
        ({0: (1, 7), 1: (3, 14)}, {0: 40, 1: 60}),  # h = {20, 30}: normalized
        ({0: (0, 3), 1: (0, 3)}, {0: 100, 1: 0}),  # nothing healthy: P0, in panic
        ({0: (0, 2), 1: (1, 2), 2: (2, 2)}, {0: 0, 1: 70, 2: 30}),
    ],
)
def test_priority_loads_follow_envoy(health: Any, expected: dict[int, int]) -> None:
    assert priority_loads(health, 1.4) == expected


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20), st.integers(1, 20)), min_size=1, max_size=5),
    st.floats(1.0, 1000.0),
)
def test_priority_loads_sum_to_100_and_fail_over_in_order(pairs: Any, factor: float) -> None:
    health = {p: (min(h, t), t) for p, (h, t) in enumerate(pairs)}
    loads = priority_loads(health, factor)
    assert sum(loads.values()) == 100
    assert all(v >= 0 for v in loads.values())
    first_full = next(
        (p for p, (h, t) in health.items() if round(factor * 100) * h // t >= 100), None
    )
    if first_full is not None:  # nothing below a fully healthy level gets traffic
        assert all(loads[p] == 0 for p in health if p > first_full)


def test_a_large_factor_is_hard_failover() -> None:
    assert priority_loads({0: (1, 10), 1: (5, 5)}, 1000.0) == {0: 100, 1: 0}


def _endpoints(levels: list[int]) -> list[Endpoint]:
    return [
        Endpoint(ServiceInstance("s", "127.0.0.1", 9000 + i, priority=p))
        for i, p in enumerate(levels)
    ]


def test_priority_panics_per_level_while_total_health_is_short() -> None:
    everyone = _endpoints([0, 0, 0, 0, 1, 1, 1, 1])
    healthy = [everyone[0], everyone[4], everyone[5]]  # P0 25%, P1 50% healthy
    plan = plan_priorities(everyone, healthy, factor=1.4, threshold=0.5, fail_open=True)
    # h = {35, 70}: NTH 100, so nothing panics; P0 35%, P1 65%.
    assert plan.loads == {0: 35, 1: 65}
    assert plan.panic == frozenset()
    assert set(plan.endpoints) == set(healthy)
    healthy = [everyone[0], everyone[4]]  # 25% each: h = {35, 35}, NTH 70 < 100
    plan = plan_priorities(everyone, healthy, factor=1.4, threshold=0.5, fail_open=True)
    assert plan.panic == {0, 1}
    assert plan.loads == {0: 50, 1: 50}
    assert set(plan.endpoints) == set(everyone)  # each level in panic uses all its hosts
    closed = plan_priorities(everyone, healthy, factor=1.4, threshold=0.5, fail_open=False)
    assert closed.endpoints == ()
    assert closed.loads == {}


def test_healthy_priority_zero_takes_everything() -> None:
    rows = [{"address": f"127.0.0.1:{9000 + i}", "priority": i // 2} for i in range(4)]
    lb = static(rows, outlier=None)
    assert set(picks(lb, 10)) == {"127.0.0.1:9000", "127.0.0.1:9001"}
    assert lb.stats("s")["priority_loads"] == {0: 100}  # visible, though all go to one level
    lb.close()


def test_no_rule_no_stage() -> None:
    """Unused, the stage is not there: the service's own scheduler serves the picks."""
    lb = static([{"address": "127.0.0.1:9000"}, {"address": "127.0.0.1:9001"}])
    picks(lb, 1)
    assert type(lb.service("s").scheduler).__name__ == "RoundRobinScheduler"
    lb.close()


def test_each_group_keeps_the_services_scheduler() -> None:
    rows = [
        {"address": f"127.0.0.1:{9000 + i}", "metadata": {"version": "v1" if i < 3 else "v2"}}
        for i in range(5)
    ]
    router = SubsetRouter("version", header="x-version")
    lb = static(rows, scheduler="peak_ewma", routers=[router])
    picks(lb, 1)
    scheduler = lb.service("s").scheduler
    assert isinstance(scheduler, RoutedScheduler)
    inner = scheduler.tables[0].schedulers
    assert type(inner["v1"]).name == "peak_ewma"
    assert len(inner["v1"].endpoints) == 3
    lb.close()


class _ByTenant(Router):
    """A user's own rule: tenants listed in an instance's ``tenants`` metadata."""

    def prepare(self, usable: Sequence[Endpoint], previous: Routes | None) -> Routes:
        groups: dict[Hashable, list[Endpoint]] = {}
        for endpoint in usable:
            for tenant in endpoint.instance.metadata.get("tenants", "").split(","):
                groups.setdefault(tenant, []).append(endpoint)
        return _Tenants({k: tuple(v) for k, v in groups.items() if k})


class _Tenants(Routes):
    def __init__(self, groups: dict[Hashable, tuple[Endpoint, ...]]) -> None:
        self.groups = groups

    def route(self, context: PickContext) -> Hashable | None:
        return context.attributes.get("tenant")


def test_a_users_own_rule() -> None:
    rows = [
        {"address": "127.0.0.1:9000", "metadata": {"tenants": "acme,globex"}},
        {"address": "127.0.0.1:9001", "metadata": {"tenants": "globex"}},
        {"address": "127.0.0.1:9002"},
    ]
    lb = static(rows, routers=[_ByTenant()])
    assert picks(lb, 4, PickContext(attributes={"tenant": "acme"})) == {"127.0.0.1:9000": 4}
    assert set(picks(lb, 4, PickContext(attributes={"tenant": "globex"}))) == {
        "127.0.0.1:9000",
        "127.0.0.1:9001",
    }
    assert len(picks(lb, 3)) == 3
    lb.close()


def test_request_header_without_a_request_is_none() -> None:
    assert request_header(PickContext(), "x-anything") is None
    assert request_header(PickContext(attributes={"metadata": (("x-a", b"1"),)}), "X-A") == "1"


def test_retry_leaves_a_sticky_instance() -> None:
    rows = [{"address": "127.0.0.1:9000", "id": "a"}, {"address": "127.0.0.1:9001", "id": "b"}]
    lb = static(rows, same_instance=True)
    first = next(iter(picks(lb, 3)))
    with lb.pick("s", PickContext(exclude=frozenset({first}))) as handle:
        assert handle.instance.id != first
    lb.close()


def test_same_instance_under_threads() -> None:
    rows = [{"address": f"127.0.0.1:{9000 + i}"} for i in range(4)]
    lb = static(rows, same_instance=True)
    seen: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def work() -> None:
        local = picks(lb, 200)
        with lock:
            seen.update(local)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(seen.values()) == 1600
    assert max(seen.values()) >= 1600 - 8  # at most the racing first picks went elsewhere
    assert all(row["in_flight"] == 0 for row in lb.stats("s")["instances"])
    lb.close()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("hint_header", ""),
        ("hint_header", 3),
        ("hint_key", ""),
        ("hint", ""),
        ("hint", 5),
        ("sticky_cookie", "  "),
        ("sticky_set_cookie", "yes"),
        ("same_instance", 1),
        ("routers", "SubsetRouter"),
        ("routers", [object()]),
        ("overprovisioning_factor", 0.5),
        ("overprovisioning_factor", float("nan")),
        ("overprovisioning_factor", True),
    ],
)
def test_bad_routing_settings_are_refused_naming_them(setting: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        lbclient.LoadBalancer({"s": ["127.0.0.1:1"]}, **{setting: value})


def test_sticky_set_cookie_needs_a_cookie() -> None:
    with pytest.raises(ConfigurationError, match=r"sticky_set_cookie=True .*sticky_cookie"):
        lbclient.LoadBalancer({"s": ["127.0.0.1:1"]}, sticky_set_cookie=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"key": ""}, "SubsetRouter.key"),
        ({"key": "v", "header": 5}, "SubsetRouter.header"),
        ({"key": "v"}, "needs a header to route by"),
        ({"key": "v", "header": "h", "fallback": "maybe"}, "SubsetRouter.fallback"),
        ({"key": "v", "header": "h", "fallback": "default"}, "SubsetRouter.default"),
        ({"key": "v", "header": "h", "default": "v1"}, "SubsetRouter.default"),
        ({"key": "v", "split": {}}, "SubsetRouter.split"),
        ({"key": "v", "split": {"v1": -1}}, r"SubsetRouter.split\['v1'\]"),
        ({"key": "v", "split": {"v1": 0.5}}, r"SubsetRouter.split\['v1'\]"),
        ({"key": "v", "split": {"v1": 0}}, "at least one weight"),
    ],
)
def test_bad_subset_router_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SubsetRouter(**kwargs)


@pytest.mark.parametrize("priority", [-1, 128, 1.0, "1", True, None])
def test_instance_priority_is_an_integer_0_to_127(priority: Any) -> None:
    with pytest.raises(ConfigurationError, match="priority"):
        ServiceInstance("s", "127.0.0.1", 80, priority=priority)
    assert ServiceInstance("s", "127.0.0.1", 80, priority=127).priority == 127


def _zoned(zones: str) -> list[Endpoint]:
    return [
        Endpoint(ServiceInstance("s", "127.0.0.1", 9000 + i, zone=z)) for i, z in enumerate(zones)
    ]


@pytest.mark.parametrize(
    ("zones", "callers", "expected"),
    [
        ("aaaabbbb", {"a": 1, "b": 1}, {"a": 10_000}),  # capacity matches callers: all local
        ("aaaaaabb", None, {"a": 10_000}),  # more capacity here than callers
        ("aabbbbbb", {"a": 1, "b": 1}, {"a": 5000, "b": 5000}),
        ("aabbbbcc", {"a": 2, "b": 1, "c": 1}, {"a": 5000, "b": 5000}),  # c has no surplus
        ("aabbbbbbbb", {"a": 1, "b": 0}, {"a": 2000, "b": 8000}),
        ("aaaaa", None, None),  # one zone: off
        ("aabbb", None, None),  # below min_cluster_size 6: off
        ("bbbbbbbb", None, None),  # nothing in the caller's zone: off
    ],
)
def test_zone_shares_follow_envoy(zones: str, callers: Any, expected: Any) -> None:
    assert zone_shares(_zoned(zones), "a", callers) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.text("abc", min_size=6, max_size=30),
    st.dictionaries(st.sampled_from("abc"), st.integers(0, 9)),
)
def test_zone_shares_sum_to_the_whole(zones: str, callers: dict[str, int]) -> None:
    shares = zone_shares(_zoned(zones), "a", callers if sum(callers.values()) else None)
    if shares is not None:
        assert sum(shares.values()) == 10_000
        assert all(v >= 0 for v in shares.values())


@pytest.mark.parametrize(
    ("settings_", "match"),
    [
        ({"zone_routing": "nearest", "zone": "a"}, "zone_routing='nearest'"),
        ({"zone_routing": "aware"}, "zone_routing='aware'"),
        (
            {"zone": "a", "zone_routing": "aware", "zone_min_cluster_size": 0},
            "zone_min_cluster_size",
        ),
        ({"zone": "a", "caller_zones": {"a": 1}}, "caller_zones"),
        ({"zone": "a", "zone_routing": "aware", "caller_zones": {"a": -1}}, r"caller_zones\['a'\]"),
        ({"zone": "a", "zone_routing": "aware", "caller_zones": {"a": 0}}, "at least one zone"),
        ({"zone": "a", "zone_routing": "aware", "caller_zones": ["a"]}, "caller_zones"),
    ],
)
def test_bad_zone_settings_are_refused(settings_: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        lbclient.LoadBalancer({"s": ["127.0.0.1:1"]}, **settings_)


def test_zone_aware_routing_says_why_it_is_off(caplog: pytest.LogCaptureFixture) -> None:
    rows = [{"address": f"127.0.0.1:{9000 + i}", "zone": "ab"[i % 2]} for i in range(4)]
    lb = static(rows, zone="a", zone_routing="aware")
    assert len(picks(lb, 8)) == 4  # off: every instance, as plain balancing
    stats = lb.stats("s")
    assert "zone_min_cluster_size=6" in stats["zone_aware_off"]
    assert stats["zone_shares"] == {}
    assert "zone-aware routing off" in caplog.text
    lb.close()


def test_a_retry_spills_to_the_next_level_when_its_level_is_exhausted() -> None:
    rows = [
        {"address": "127.0.0.1:9000", "id": "p0", "priority": 0},
        {"address": "127.0.0.1:9001", "id": "p1", "priority": 1},
    ]
    lb = static(rows)
    assert picks(lb, 5) == {"p0": 5}  # first attempts: priority 0 only
    assert picks(lb, 3, PickContext(exclude=frozenset({"p0"}))) == {"p1": 3}
    usable = {row["id"]: row["usable"] for row in lb.stats("s")["instances"]}
    assert usable == {"p0": True, "p1": True}  # healthy, idle until needed
    lb.close()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["v1", "v2", "v3", ""]), min_size=1, max_size=12),
    st.lists(st.sampled_from(["v1", "v2", "v3", "v9", None]), min_size=1, max_size=20),
    st.sampled_from(["round_robin", "peak_ewma", "ring_hash", "least_request"]),
    st.booleans(),
)
def test_a_subset_request_lands_in_its_subset_or_falls_back(
    versions: list[str], wanted: list[str | None], scheduler: str, excluding: bool
) -> None:
    rows = [
        {"address": f"127.0.0.1:{9000 + i}", "metadata": {"version": v} if v else {}}
        for i, v in enumerate(versions)
    ]
    router = SubsetRouter("version", header="x-version")
    lb = static(rows, routers=[router], scheduler=scheduler, hint_header="x-hint")
    by_id = {f"127.0.0.1:{9000 + i}": v for i, v in enumerate(versions)}
    for value in wanted:
        headers = (("x-version", value),) if value else ()
        first = f"127.0.0.1:{9000}"
        context = PickContext(
            key="k",
            attributes={"metadata": headers},
            exclude=frozenset({first} if excluding else ()),
        )
        with lb.pick("s", context) as handle:
            chosen = by_id[handle.instance.id]
        if value in versions:  # a non-empty subset: the request stays in it
            assert chosen == value
    assert all(row["in_flight"] == 0 for row in lb.stats("s")["instances"])
    lb.close()


def test_a_retry_stays_in_its_subset() -> None:
    rows = [
        {"address": "127.0.0.1:9000", "id": "old", "metadata": {"version": "v1"}},
        {"address": "127.0.0.1:9001", "id": "canary", "metadata": {"version": "v2"}},
    ]
    lb = static(rows, routers=[SubsetRouter("version", header="x-version")])
    retry = PickContext(
        attributes={"metadata": (("x-version", "v2"),)}, exclude=frozenset({"canary"})
    )
    assert picks(lb, 3, retry) == {"canary": 3}  # never to v1, even on a retry
    lb.close()
