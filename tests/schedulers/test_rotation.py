"""Deterministic schedulers: round robin, weighted round robin, failover, overflow."""

from __future__ import annotations

import itertools
import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from lbclient import Outcome, PickContext
from lbclient.schedulers.round_robin import RoundRobinScheduler
from lbclient.schedulers.weighted_round_robin import WeightedRoundRobinScheduler

from ._support import build, endpoints, load

CTX = PickContext()


@given(size=st.integers(2, 30), seed=st.integers(0, 2**32))
def test_round_robin_visits_each_instance_once_per_turn(size: int, seed: int) -> None:
    items = endpoints([1.0] * size)
    scheduler = build("round_robin", items, seed)
    picks = [scheduler.pick(CTX) for _ in range(3 * size)]
    first = items.index(picks[0])
    assert picks == [items[(first + i) % size] for i in range(3 * size)]


def test_round_robin_starts_at_a_random_offset() -> None:
    items = endpoints([1.0] * 10)
    starts = {build("rr", items, seed).pick(CTX).id for seed in range(200)}
    assert len(starts) == 10


def test_round_robin_does_not_advance_with_one_instance() -> None:
    items = endpoints([1.0])
    scheduler = build("round_robin", items)
    assert isinstance(scheduler, RoundRobinScheduler)
    before = repr(scheduler._position)
    assert all(scheduler.pick(CTX) is items[0] for _ in range(10))
    assert repr(scheduler._position) == before


@settings(max_examples=40)
@given(weights=st.lists(st.integers(1, 10), min_size=2, max_size=12), seed=st.integers(0, 99))
def test_weighted_round_robin_is_exact_over_one_schedule(weights: list[int], seed: int) -> None:
    items = endpoints([float(w) for w in weights])
    scheduler = build("weighted_round_robin", items, seed)
    assert isinstance(scheduler, WeightedRoundRobinScheduler)
    divisor = math.gcd(*weights)
    period = sum(weights) // divisor
    if len(set(weights)) > 1:
        assert len(scheduler.schedule) == period
    got = Counter(scheduler.pick(CTX).id for _ in range(2 * period))
    if len(set(weights)) == 1:
        assert set(got.values()) == {2 * period // len(items)}
    else:
        assert got == {e.id: 2 * int(e.weight) // divisor for e in items}


def test_weighted_round_robin_interleaves_smoothly() -> None:
    heavy, light = endpoints([3.0, 1.0])
    scheduler = build("wrr", [heavy, light])
    picks = [scheduler.pick(CTX) for _ in range(400)]
    longest = max(len(list(run)) for _, run in itertools.groupby(picks))
    assert longest <= 3  # never heavy x4 in a row: EDF spreads the light instance out


def test_weighted_round_robin_with_equal_weights_is_plain_rotation() -> None:
    items = endpoints([2.0] * 5)
    scheduler = build("wrr", items, 3)
    assert isinstance(scheduler, WeightedRoundRobinScheduler)
    assert scheduler.schedule == tuple(items)
    picks = [scheduler.pick(CTX) for _ in range(10)]
    first = items.index(picks[0])
    assert picks == [items[(first + i) % 5] for i in range(10)]


def test_weighted_round_robin_fractional_weights_are_scaled() -> None:
    items = endpoints([0.1, 0.25, 1.0 / 3.0])
    scheduler = build("wrr", items, resolution=1000)
    got = Counter(scheduler.pick(CTX).id for _ in range(len(scheduler.schedule)))
    total = sum(got.values())
    for e in items:
        assert abs(got[e.id] / total - e.weight / (0.1 + 0.25 + 1 / 3)) < 0.002


def test_failover_sends_everything_to_the_heaviest_then_the_next() -> None:
    items = endpoints([1.0, 5.0, 5.0, 2.0])
    scheduler = build("fo", items)
    assert {scheduler.pick(CTX).id for _ in range(50)} == {items[1].id}  # tie: lowest id
    assert scheduler.pick(CTX.excluding(items[1].id)) is items[2]
    assert scheduler.pick(PickContext(exclude=frozenset({items[1].id, items[2].id}))) is items[3]
    # The list without the heaviest (it failed its health check): the next one takes over.
    assert build("fo", [items[0], items[2], items[3]]).pick(CTX) is items[2]


def test_overflow_fills_the_heaviest_up_to_its_weight_then_the_next() -> None:
    big, small, tiny = endpoints([3.0, 2.0, 1.0])
    scheduler = build("ovf", [tiny, small, big])
    order = []
    for _ in range(6):
        chosen = scheduler.pick(CTX)
        chosen.begin()
        order.append(chosen)
    assert order == [big, big, big, small, small, tiny]
    # All full: the least loaded per unit of weight, never an error.
    extra = scheduler.pick(CTX)
    assert extra in (big, small, tiny)
    big.finish(Outcome(latency=0.01))
    assert scheduler.pick(CTX) is big


def test_overflow_capacity_scales_the_weight() -> None:
    big, small = endpoints([2.0, 1.0])
    scheduler = build("ovf", [big, small], capacity=2.0)
    load(big, 3)
    assert scheduler.pick(CTX) is big
    load(big, 1)
    assert scheduler.pick(CTX) is small


def test_retries_do_not_move_the_rotation() -> None:
    # One of two instances always fails and every failure is retried elsewhere: the failing
    # instance must still get only its share of first attempts, not all of them.
    for name in ("round_robin", "weighted_round_robin"):
        items = endpoints([1.0, 1.0])
        failing = items[0]
        scheduler = build(name, items, 7)
        first_attempts = Counter()
        for _ in range(100):
            first = scheduler.pick(CTX)
            first_attempts[first.id] += 1
            if first is failing:
                retry = scheduler.pick(CTX.excluding(failing.id))
                assert retry is not failing
        assert first_attempts[failing.id] == 50, (name, first_attempts)
