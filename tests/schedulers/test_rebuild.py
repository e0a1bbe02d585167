"""Fast rebuilds build exactly the structures of the straightforward algorithms.

maglev and ring_hash are rebuilt on every list change, so their builders are tuned (turns per
weight, an endgame search, carried-over hashes); the tables and rings must not change by a
single slot, or clients of different versions would map keys differently.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from lbclient.schedulers._hashing import hash128
from lbclient.schedulers.maglev import (
    MaglevScheduler,
    _turns_by_instance,
    _turns_by_weight,
    maglev_table,
    probe_starts,
)

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
