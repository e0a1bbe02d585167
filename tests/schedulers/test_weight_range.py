"""Every scheduler builds and picks over any valid weights: anything in [MIN_WEIGHT,
MAX_WEIGHT], the bounds themselves, and mixes of extremes (a registry can send all of them). A
weight outside the range never reaches a scheduler: ServiceInstance refuses it."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbclient import ConfigurationError, PickContext, ServiceInstance
from lbclient._instance import MAX_WEIGHT, MIN_WEIGHT
from lbclient.schedulers import available_schedulers

from ._support import build, endpoints, key_contexts

NAMES = available_schedulers()
CONTEXTS = [PickContext(), *key_contexts(5), PickContext(exclude=frozenset({"127.0.0.1:20000"}))]

valid_weights = st.one_of(
    st.sampled_from([MAX_WEIGHT, MIN_WEIGHT, 1.0, 1.5e-6, 0.01, MAX_WEIGHT - 0.5, 65535.0]),
    st.floats(min_value=MIN_WEIGHT, max_value=MAX_WEIGHT),
    st.integers(min_value=1, max_value=int(MAX_WEIGHT)).map(float),
)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weights=st.lists(valid_weights, min_size=1, max_size=12))
def test_any_valid_weights_build_and_pick(name: str, weights: list[float]) -> None:
    items = endpoints(weights)
    scheduler = build(name, items)
    ids = {e.id for e in items}
    for context in CONTEXTS:
        assert scheduler.pick(context).id in ids


@pytest.mark.parametrize("name", NAMES)
def test_all_at_max_and_extreme_mixes(name: str) -> None:
    for weights in (
        [MAX_WEIGHT] * 200,
        [MAX_WEIGHT, MIN_WEIGHT],
        [MIN_WEIGHT] * 3,
        [MAX_WEIGHT if i % 2 else MIN_WEIGHT for i in range(64)],
        [MIN_WEIGHT] * 199 + [MAX_WEIGHT],
    ):
        items = endpoints(weights)
        scheduler = build(name, items)
        for context in CONTEXTS:
            assert scheduler.pick(context) in items


@pytest.mark.parametrize(
    "weight",
    [0, -1, math.nan, math.inf, -math.inf, MAX_WEIGHT * 1.0000001, 1e308, 5e-324, 9e-7, True, "1"],
)
def test_weights_outside_the_range_are_refused(weight: object) -> None:
    with pytest.raises(ConfigurationError, match="weight"):
        ServiceInstance("svc", "h", 1, weight=weight)  # type: ignore[arg-type]
