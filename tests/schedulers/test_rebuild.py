"""Fast rebuilds build exactly the structures of the straightforward algorithms.

maglev and ring_hash are rebuilt on every list change, so their builders are tuned (turns per
weight, an endgame search, carried-over hashes); the tables and rings must not change by a
single slot, or clients of different versions would map keys differently.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from lbclient.schedulers._hashing import hash64, hash128
from lbclient.schedulers.maglev import (
    MaglevScheduler,
    _turns_by_instance,
    _turns_by_weight,
    maglev_table,
    probe_starts,
)
from lbclient.schedulers.ring_hash import RingHashScheduler, merged_ring, ring

from ._support import build, endpoints


def envoy_maglev(ids: list[str], weights: list[float], size: int) -> list[int]:
    """Envoy's weighted Maglev population, instance by instance and turn by turn."""
    positions, skips = [], []
    for instance_id in ids:
        first, second = hash128(instance_id)
        positions.append(first % size)
        skips.append(second % (size - 1) + 1)
    heaviest = max(weights)
    targets = [0.0] * len(ids)
    table = [-1] * size
    filled, turn = 0, 0
    while filled < size:
        turn += 1
        for index in range(len(ids)):
            if turn * weights[index] < targets[index]:
                continue
            targets[index] += heaviest
            slot = positions[index]
            while table[slot] >= 0:
                slot = (slot + skips[index]) % size
            table[slot] = index
            positions[index] = (slot + skips[index]) % size
            filled += 1
            if filled == size:
                break
    return table


WEIGHTS = st.sampled_from([1.0, 2.0, 3.0, 0.7, 10.0, 1.5])


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(WEIGHTS, min_size=1, max_size=60)
    | st.lists(st.floats(0.1, 50.0), min_size=1, max_size=60),
    size=st.sampled_from([2, 5, 251, 1009, 4099]),
    prefix=st.text("abc", max_size=3),
)
def test_maglev_table_is_envoys(weights: list[float], size: int, prefix: str) -> None:
    ids = [f"{prefix}{n}" for n in range(len(weights))]
    assert maglev_table(ids, weights, size) == envoy_maglev(ids, weights, size)


def test_maglev_carries_probes_over_without_changing_the_table() -> None:
    items = endpoints([1.0 + n % 4 for n in range(300)])
    first = build("maglev", items, table_size=4099)
    churned = [*items[3:], *endpoints([2.0, 1.0, 3.0], port=30000)]
    second = build("maglev", churned, table_size=4099, previous=first)
    fresh = build("maglev", churned, table_size=4099)
    assert isinstance(second, MaglevScheduler)
    assert isinstance(fresh, MaglevScheduler)
    assert second.table == fresh.table
    assert second.probes == probe_starts(sorted(e.id for e in churned), 4099, {})
    other_size = build("maglev", churned, table_size=4093, previous=first)
    assert isinstance(other_size, MaglevScheduler)
    assert other_size.probes == probe_starts(sorted(e.id for e in churned), 4093, {})


def envoy_turns(weights: list[float], count: int) -> list[int]:
    """The first ``count`` slot takers of Envoy's turn loop."""
    heaviest = max(weights)
    targets = [0.0] * len(weights)
    order: list[int] = []
    turn = 0
    while len(order) < count:
        turn += 1
        for index, weight in enumerate(weights):
            if not turn * weight < targets[index]:
                targets[index] += heaviest
                order.append(index)
    return order[:count]


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(WEIGHTS | st.floats(0.01, 100.0), min_size=2, max_size=40),
    count=st.integers(1, 3000),
)
def test_both_turn_strategies_follow_envoys_turns(weights: list[float], count: int) -> None:
    heaviest = max(weights)
    classes: dict[float, list[int]] = {}
    for index, weight in enumerate(weights):
        classes.setdefault(weight, []).append(index)
    expected = envoy_turns(weights, count)
    by_weight = _turns_by_weight(classes, heaviest)
    by_instance = _turns_by_instance(weights, heaviest)
    assert list(itertools.islice(by_weight, count)) == expected
    assert list(itertools.islice(by_instance, count)) == expected


def ketama_ring(scheduler: RingHashScheduler) -> list[tuple[int, str]]:
    """The ring as the straightforward build makes it: sorted (hash, index) pairs."""
    ordered = scheduler.ordered
    counts = [len(scheduler.points[e.id]) for e in ordered]
    pairs = sorted(
        (hash64(f"{e.id}_{n}"), index)
        for index, (e, count) in enumerate(zip(ordered, counts, strict=True))
        for n in range(count)
    )
    return [(point, ordered[index].id) for point, index in pairs]


def ring_of(scheduler: RingHashScheduler) -> list[tuple[int, str]]:
    return [
        (point, owner.id) for point, owner in zip(scheduler._hashes, scheduler._owners, strict=True)
    ]


@settings(max_examples=20, deadline=None)
@given(
    weights=st.lists(WEIGHTS, min_size=1, max_size=40),
    churn=st.integers(0, 5),
    min_ring_size=st.sampled_from([1, 64, 1024]),
)
def test_ring_hash_builds_the_ketama_ring_and_reuses_hashes_exactly(
    weights: list[float], churn: int, min_ring_size: int
) -> None:
    items = endpoints(weights)
    first = build("ring_hash", items, min_ring_size=min_ring_size)
    assert isinstance(first, RingHashScheduler)
    assert ring_of(first) == ketama_ring(first)
    changed = [*items[churn:], *endpoints([3.0] * churn, port=30000)]
    second = build("ring_hash", changed, min_ring_size=min_ring_size, previous=first)
    fresh = build("ring_hash", changed, min_ring_size=min_ring_size)
    assert isinstance(second, RingHashScheduler)
    assert isinstance(fresh, RingHashScheduler)
    assert ring_of(second) == ring_of(fresh) == ketama_ring(fresh)


def test_equal_point_hashes_go_to_the_lower_index_first() -> None:
    a, b, c = endpoints([1.0, 1.0, 1.0])
    hashes, owners = ring([a, b, c], {a.id: [5, 9], b.id: [9, 1], c.id: [5]})
    assert hashes == [1, 5, 5, 9, 9]
    assert owners == [b, a, c, a, b]


@settings(max_examples=25, deadline=None)
@given(
    weights=st.lists(WEIGHTS, min_size=100, max_size=160),
    rounds=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 4), st.booleans()), min_size=1, max_size=4
    ),
)
def test_ring_hash_merges_small_changes_into_the_previous_ring_exactly(
    weights: list[float], rounds: list[tuple[int, int, bool]]
) -> None:
    # min_ring_size=1: each instance gets weight / lightest points, so the counts of the
    # instances that stay hold while the lightest weight does (else every count changes and
    # the ring is rebuilt whole, also checked here).
    items = endpoints(weights)
    scheduler = build("ring_hash", items, min_ring_size=1)
    port = 30000
    for leaving, arriving, replace in rounds:
        lightest = min(e.weight for e in items)
        items = [*items[leaving:], *endpoints([2.0] * arriving, port=port)]
        port += 100
        if replace:  # the same instance behind a new endpoint object: owners must follow it
            items[0] = endpoints([items[0].weight], port=items[0].instance.port)[0]
        assert isinstance(scheduler, RingHashScheduler)
        previous = scheduler
        scheduler = build("ring_hash", items, min_ring_size=1, previous=previous)
        fresh = build("ring_hash", items, min_ring_size=1)
        assert isinstance(scheduler, RingHashScheduler)
        assert isinstance(fresh, RingHashScheduler)
        assert ring_of(scheduler) == ring_of(fresh) == ketama_ring(fresh)
        assert all(a is b for a, b in zip(scheduler._owners, fresh._owners, strict=True))
        merged = merged_ring(previous, scheduler.ordered, scheduler.points)
        if min(e.weight for e in items) == lightest:
            assert merged is not None  # few changes: merged, not rebuilt
        if merged is not None:
            assert merged == (scheduler._hashes, scheduler._owners)


def test_a_merge_meeting_an_equal_point_hash_leaves_it_to_the_full_build() -> None:
    items = endpoints([1.0] * 20)
    previous = build("ring_hash", items, min_ring_size=64)
    assert isinstance(previous, RingHashScheduler)
    newcomer = endpoints([1.0], port=40000)[0]
    ordered = sorted([*items, newcomer], key=lambda e: e.id)
    points = {**previous.points, newcomer.id: [previous._hashes[5]]}
    assert merged_ring(previous, ordered, points) is None
    hashes, _ = ring(ordered, points)
    assert hashes.count(previous._hashes[5]) == 2


def test_maglev_rebuilt_over_successive_changes_is_the_fresh_table() -> None:
    items = endpoints([1.0 + n % 4 for n in range(400)])
    scheduler = build("maglev", items)
    for round_ in range(4):
        items = [*items[5:], *endpoints([1.0 + round_, 3.0], port=30000 + 10 * round_)]
        scheduler = build("maglev", items, previous=scheduler)
        fresh = build("maglev", items)
        assert isinstance(scheduler, MaglevScheduler)
        assert isinstance(fresh, MaglevScheduler)
        assert [e.id for e in scheduler.table] == [e.id for e in fresh.table]
        ids = [e.id for e in fresh.ordered]
        weights = [e.weight for e in fresh.ordered]
        assert [fresh.ordered[i].id for i in envoy_maglev(ids, weights, 4099)] == [
            e.id for e in fresh.table
        ]
