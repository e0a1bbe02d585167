"""Slow start, zone preference and deterministic subsetting."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import Failure
from lbclient.filters import OutlierDetection, SlowStart, deterministic_subset
from lbclient.health import HttpHealthCheck
from lbclient.testing import HTTPBackend

from .conftest import FAST_PROBE, FileRegistry, row, usable_ids, wait_until

Make = Callable[[int], list[HTTPBackend]]


# -- slow start ----------------------------------------------------------------------------


def test_slow_start_factor_follows_envoy() -> None:
    ramp = SlowStart(window=10, aggression=1.0, min_weight_percent=10)
    assert ramp.factor(0) == pytest.approx(0.1)  # max(t, 1 s) / window = 0.1
    assert ramp.factor(5) == pytest.approx(0.5)
    assert ramp.factor(10) == 1.0
    steep = SlowStart(window=10, aggression=2.0, min_weight_percent=10)
    assert steep.factor(2.5) == pytest.approx(0.5)  # (0.25) ** (1/2)
    floor = SlowStart(window=100, min_weight_percent=30)
    assert floor.factor(10) == pytest.approx(0.3)


def test_new_instance_ramps_up_while_the_scheduler_is_rebuilt(
    file_registry: FileRegistry,
) -> None:
    file_registry.write("svc", ["127.0.0.1:1", "127.0.0.1:2"])
    lb = lbclient.LoadBalancer(
        file_registry.registry(), scheduler="wrr", slow_start=SlowStart(window=3, steps=6)
    )
    with lb:
        state = lb.service("svc")
        assert {row(lb, "svc", i)["weight"] for i in state.endpoints} == {1.0}  # no ramp at start
        file_registry.write("svc", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
        wait_until(lambda: "127.0.0.1:3" in usable_ids(lb, "svc"))
        weights = [float(str(row(lb, "svc", "127.0.0.1:3")["weight"]))]
        schedulers = {id(state.scheduler)}

        def ramped() -> bool:
            weights.append(float(str(row(lb, "svc", "127.0.0.1:3")["weight"])))
            schedulers.add(id(state.scheduler))
            return weights[-1] == 1.0

        wait_until(ramped)
        assert weights[0] < 0.5
        assert weights == sorted(weights)  # only ever goes up
        assert len(set(weights)) >= 3
        assert len(schedulers) >= 3  # rebuilt on the timer during the window
        assert row(lb, "svc", "127.0.0.1:3")["slow_start"] is None
        assert row(lb, "svc", "127.0.0.1:1")["weight"] == 1.0


def test_readmitted_instance_ramps_again() -> None:
    lb = lbclient.LoadBalancer(
        {"svc": ["127.0.0.1:1", "127.0.0.1:2"]},
        outlier=OutlierDetection(consecutive_5xx=1, base_ejection_time=0.05),
        slow_start=SlowStart(window=30),
        scheduler="wrr",
    )
    with lb:
        state = lb.service("svc")
        with state.pick(lbclient.PickContext(exclude=frozenset({"127.0.0.1:2"}))) as handle:
            handle.done(Failure.SERVER)
        assert row(lb, "svc", "127.0.0.1:1")["ejected"] is True
        wait_until(lambda: "127.0.0.1:1" in usable_ids(lb, "svc"))
        assert float(str(row(lb, "svc", "127.0.0.1:1")["weight"])) < 0.1 + 1e-9


# -- zones ---------------------------------------------------------------------------------


def test_zone_preference_and_fallback(backends: Make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lbclient.health")
    a1, a2, b1, b2 = backends(4)
    entries = [
        {"address": a1.address, "zone": "a"},
        {"address": a2.address, "metadata": {"zone": "a"}},  # Spring's metadata key works too
        {"address": b1.address, "zone": "b"},
        {"address": b2.address, "zone": "b"},
    ]
    check = HttpHealthCheck(unhealthy_threshold=1, healthy_threshold=1, **FAST_PROBE)
    lb = lbclient.LoadBalancer({"svc": entries}, zone="a", health_check=check)
    with lb:
        assert usable_ids(lb, "svc") == {a1.address, a2.address}
        a1.health_status = 503
        wait_until(lambda: usable_ids(lb, "svc") == {a2.address})  # local and healthy first
        a2.health_status = 503
        wait_until(lambda: usable_ids(lb, "svc") == {b1.address, b2.address})
        a1.health_status = 200
        wait_until(lambda: usable_ids(lb, "svc") == {a1.address})
    messages = [r.getMessage() for r in caplog.records]
    assert any("no usable instance in zone 'a'" in m for m in messages)
    assert any("back to instances in zone 'a'" in m for m in messages)


def test_zone_can_differ_per_service() -> None:
    entries = [{"address": "127.0.0.1:1", "zone": "a"}, {"address": "127.0.0.1:2", "zone": "b"}]
    lb = lbclient.LoadBalancer(
        {"svc": entries, "other": entries}, zone="a", services={"other": {"zone": "b"}}
    )
    with lb:
        assert usable_ids(lb, "svc") == {"127.0.0.1:1"}
        assert usable_ids(lb, "other") == {"127.0.0.1:2"}


# -- subsetting ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=60),
    size=st.integers(min_value=1, max_value=20),
    client=st.text(min_size=1, max_size=12),
    seed=st.randoms(use_true_random=False),
)
def test_subset_is_deterministic_and_sized(
    count: int, size: int, client: str, seed: object
) -> None:
    ids = [f"10.0.0.{n}:80" for n in range(count)]
    chosen = deterministic_subset(ids, client, size)
    assert len(chosen) == min(count, size)
    assert set(chosen) <= set(ids)
    assert len(set(chosen)) == len(chosen)
    shuffled = list(ids)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    assert set(deterministic_subset(shuffled, client, size)) == set(chosen)  # order-blind


def test_clients_of_a_round_share_the_instances_evenly() -> None:
    ids = [f"10.0.0.{n}:80" for n in range(12)]
    used: dict[str, int] = dict.fromkeys(ids, 0)
    for client in range(300):
        for instance_id in deterministic_subset(ids, f"client-{client}", 4):
            used[instance_id] += 1
    assert min(used.values()) > 0.5 * max(used.values())


def test_subset_size_through_the_balancer_does_not_trigger_panic() -> None:
    ids = [f"127.0.0.1:{port}" for port in range(1, 11)]
    one = lbclient.LoadBalancer({"svc": ids}, subset_size=3, subset_key="client-a")
    two = lbclient.LoadBalancer({"svc": ids}, subset_size=3, subset_key="client-a")
    with one, two:
        assert len(usable_ids(one, "svc")) == 3
        assert usable_ids(one, "svc") == usable_ids(two, "svc")
        assert one.service("svc").stats()["panic"] is False


def test_bad_shaping_settings_are_refused() -> None:
    with pytest.raises(lbclient.ConfigurationError, match="subset_size"):
        lbclient.LoadBalancer({"svc": []}, subset_size=0)
    with pytest.raises(lbclient.ConfigurationError, match="SlowStart"):
        SlowStart(window=0)
    with pytest.raises(lbclient.ConfigurationError, match="heartbeat_timeout"):
        lbclient.LoadBalancer({"svc": []}, heartbeat_timeout=0)
