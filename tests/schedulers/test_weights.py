"""Weighted schedulers send each instance its weight's share (hypothesis over weights)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbclient import PickContext

from ._support import assert_shares, build, counts, endpoints, key_contexts

WEIGHTS = st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0]), min_size=2, max_size=8)
PICKS = 6000
KEYS = key_contexts(PICKS, "user")


@settings(max_examples=25, deadline=None, derandomize=True)
@given(weights=WEIGHTS, seed=st.integers(0, 2**32))
@pytest.mark.parametrize("name", ["weighted_random", "twos", "least_request"])
def test_random_weighted_schedulers_follow_weights_when_idle(
    name: str, weights: list[float], seed: int
) -> None:
    items = endpoints(weights)
    scheduler = build(name, items, seed)
    got = Counter(scheduler.pick(PickContext()).id for _ in range(PICKS))
    assert_shares(got, items, PICKS)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(weights=WEIGHTS)
@pytest.mark.parametrize(
    ("name", "options", "slack"),
    [
        ("rendezvous", {}, 0.0),
        ("maglev", {"table_size": 8191}, 0.05),
        ("ring_hash", {"min_ring_size": 8192}, 0.15),
        ("dh", {"table_size": 4096}, 0.05),
        ("sh", {"table_size": 4096}, 0.05),
    ],
)
def test_hash_schedulers_spread_keys_by_weight(
    name: str, options: dict[str, int], slack: float, weights: list[float]
) -> None:
    items = endpoints(weights)
    assert_shares(counts(build(name, items, **options), KEYS), items, PICKS, slack=slack)


@pytest.mark.parametrize("name", ["random", "round_robin", "peak_ewma", "lc", "least_request"])
def test_unweighted_schedulers_spread_evenly(name: str) -> None:
    items = endpoints([1.0] * 7)
    scheduler = build(name, items, 11)
    got = Counter(scheduler.pick(PickContext()).id for _ in range(PICKS))
    assert_shares(got, items, PICKS)


def test_same_key_same_instance_whatever_the_list_order() -> None:
    items = endpoints([1.0, 2.0, 1.0, 4.0, 1.0])
    for name in ("ring_hash", "maglev", "rendezvous", "dh", "sh"):
        forward = build(name, items, 1)
        backward = build(name, list(reversed(items)), 2)
        for context in KEYS[:300]:
            assert forward.pick(context).id == backward.pick(context).id, name


def test_str_and_bytes_keys_agree() -> None:
    items = endpoints([1.0] * 5)
    for name in ("ring_hash", "maglev", "rendezvous", "dh"):
        scheduler = build(name, items)
        for i in range(50):
            text = scheduler.pick(PickContext(key=f"k{i}")).id
            assert scheduler.pick(PickContext(key=f"k{i}".encode())).id == text
