"""The indexed LVS schedulers choose exactly what a naive full scan chooses, under any load.

From ``INDEXED_FROM`` instances on, lc/wlc/sed/nq (and the overload checks of lblc/lblcr) pick
from a LoadIndex kept up to date by ``Endpoint.begin``/``finish``. These tests drive real
endpoints through random begin/finish sequences, ties and weights included, and compare every
pick with a plain O(n) scan written here from the LVS definitions.
"""

from __future__ import annotations

import gc
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbclient import Endpoint, Outcome, PickContext
from lbclient.schedulers._load_index import IndexSet, LoadIndex, _index_set
from lbclient.schedulers._scan import INDEXED_FROM, ScanScheduler
from lbclient.schedulers.lblcr import ReplicatedLocalityScheduler

from ._support import build, endpoints

CTX = PickContext()
WEIGHTS = st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.0])


def naive(name: str, items: list[Endpoint], start: int) -> Endpoint:
    """LVS's scan: the first lowest cost from ``start`` round the list (nq: idle first)."""

    def cost(e: Endpoint) -> float:
        if name == "lc":
            return e.in_flight
        return (e.in_flight + (name in ("sed", "nq"))) * (1.0 / e.weight)

    order = items[start:] + items[:start]
    if name == "nq" and any(e.in_flight == 0 for e in items):
        return next(e for e in order if e.in_flight == 0)
    best = min(cost(e) for e in items)
    return next(e for e in order if cost(e) == best)


def first_start(seed: int, size: int) -> int:
    """Where a scheduler built with ``random.Random(seed)`` starts its rotation."""
    return random.Random(seed).randrange(size)


OPS = st.lists(
    st.tuples(st.sampled_from(["begin", "finish", "pick", "pick", "all"]), st.integers(0, 10**6))
)
SIZES = st.sampled_from([2, 3, 7, INDEXED_FROM, INDEXED_FROM + 1, INDEXED_FROM + 37])


@settings(max_examples=25, deadline=None)
@given(
    weights=SIZES.flatmap(lambda size: st.lists(WEIGHTS, min_size=size, max_size=size)),
    ops=OPS.filter(lambda ops: len(ops) <= 150),
    seed=st.integers(0, 99),
)
def test_scans_choose_what_the_naive_scan_chooses(
    weights: list[float], ops: list[tuple[str, int]], seed: int
) -> None:
    items = endpoints(weights)
    names = ("lc", "wlc", "sed", "nq")
    schedulers = {name: build(name, items, seed) for name in names}
    starts = dict.fromkeys(names, first_start(seed, len(items)))
    for op, value in ops:
        endpoint = items[value % len(items)]
        if op == "begin":
            endpoint.begin()
        elif op == "all":  # lift every load, so levels above zero decide too
            for other in items[value % 3 :: 2]:
                other.begin()
        elif op == "finish" and endpoint.in_flight > 0:
            endpoint.finish(Outcome(latency=0.01))
        elif op == "pick":
            chosen = []
            for name, scheduler in schedulers.items():
                expected = naive(name, items, starts[name] % len(items))
                starts[name] += 1
                assert scheduler.pick(CTX) is expected, name
                chosen.append(expected)
            chosen[value % len(chosen)].begin()  # as the balancer does after a pick


def naive_least(items: list[Endpoint], start: int) -> Endpoint:
    return naive("wlc", items, start % len(items))


def load_of(e: Endpoint) -> float:
    return e.in_flight / e.weight


@settings(max_examples=15, deadline=None)
@given(
    weights=st.lists(WEIGHTS, min_size=INDEXED_FROM, max_size=INDEXED_FROM + 30),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 10**6)), max_size=250),
    seed=st.integers(0, 99),
)
def test_locality_overload_checks_match_a_naive_model(
    weights: list[float], ops: list[tuple[bool, int]], seed: int
) -> None:
    items = endpoints(weights)
    lblc = build("lblc", items, seed, overload_floor=1)
    lblcr = build("lblcr", items, seed, overload_floor=1)
    assert isinstance(lblcr, ReplicatedLocalityScheduler)
    start = {"lblc": first_start(seed, len(items)), "lblcr": first_start(seed, len(items))}
    homes: dict[str, Endpoint] = {}
    sets: dict[str, list[Endpoint]] = {}

    def least(name: str) -> Endpoint:
        chosen = naive_least(items, start[name])
        start[name] += 1
        return chosen

    for is_pick, value in ops:
        if not is_pick:
            endpoint = items[value % len(items)]
            if endpoint.in_flight:
                endpoint.finish(Outcome(latency=0.01))
            else:
                endpoint.begin()
            continue
        key = f"k{value % 7}"
        context = PickContext(key=key)
        # lblc: the remembered server unless it is overloaded (floor 1, over twice the least).
        home = homes.get(key)
        if home is None:
            home = least("lblc")
        elif home.in_flight >= 1:
            better = least("lblc")
            if 2 * load_of(better) < load_of(home):
                home = better
        homes[key] = home
        assert lblc.pick(context) is home
        # lblcr: the least loaded member, joined by the least loaded instance when overloaded.
        members = sets.get(key)
        if not members:
            chosen = least("lblcr")
            members = [chosen]
        else:
            chosen = min(members, key=load_of)
            if chosen.in_flight >= 1:
                better = least("lblcr")
                if 2 * load_of(better) < load_of(chosen) and better not in members:
                    members.append(better)
                    chosen = better
        sets[key] = members
        assert lblcr.pick(context) is chosen
        assert lblcr.members(key) == [e.id for e in members]
        chosen.begin()


@pytest.mark.parametrize("name", ["lc", "wlc", "sed", "nq"])
def test_in_flight_bookkeeping_stays_consistent_under_many_threads(name: str) -> None:
    items = endpoints([1.0 + n % 3 for n in range(INDEXED_FROM * 2)])
    scheduler = build(name, items)
    assert isinstance(scheduler, ScanScheduler)
    index = scheduler.index
    assert index is not None
    start = threading.Barrier(8)
    members = {id(e) for e in items}
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        try:
            for _ in range(1500):
                chosen = scheduler.pick(CTX)
                assert id(chosen) in members
                chosen.begin()
                other = items[rng.randrange(len(items))]
                other.begin()
                other.finish(Outcome(latency=0.001))
                chosen.finish(Outcome(latency=0.001))
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(e.in_flight == 0 for e in items)
    assert index.loads_by_cost() == fresh_levels(scheduler, items)
    # Loads left in place: the index still agrees, and with the naive scan.
    for n, endpoint in enumerate(items):
        for _ in range(n % 4):
            endpoint.begin()
    assert index.loads_by_cost() == fresh_levels(scheduler, items)


def fresh_levels(scheduler: ScanScheduler, items: list[Endpoint]) -> dict[float, list[int]]:
    rebuilt = LoadIndex(
        items,
        scheduler.inverse_weights,
        placing=scheduler.placing,
        idle_first=scheduler.idle_first,
    )
    return rebuilt.loads_by_cost()


def test_small_lists_scan_and_large_ones_index() -> None:
    small = build("lc", endpoints([1.0] * (INDEXED_FROM - 1)))
    large = build("lc", endpoints([1.0] * INDEXED_FROM))
    assert isinstance(small, ScanScheduler)
    assert isinstance(large, ScanScheduler)
    assert small.index is None
    assert large.index is not None


def test_replaced_schedulers_stop_being_told() -> None:
    items = endpoints([1.0] * INDEXED_FROM)
    for _ in range(5):
        build("wlc", items)
    gc.collect()
    keep = build("wlc", items)
    for endpoint in items:
        endpoint.begin()
        endpoint.finish(Outcome(latency=0.01))
    # Only the live scheduler's index is still registered on each endpoint.
    assert all(len(e._watchers) == 1 for e in items)
    del keep
    gc.collect()
    items[0].begin()
    assert items[0]._watchers == ()


@settings(max_examples=40, deadline=None)
@given(
    members=st.sets(st.integers(0, 700), min_size=1, max_size=60),
    removed=st.sets(st.integers(0, 700), max_size=30),
    start=st.integers(0, 700),
)
def test_index_set_successor_is_the_next_member_round_the_list(
    members: set[int], removed: set[int], start: int
) -> None:
    index_set = IndexSet()
    for member in members | removed:
        index_set.add(member)
    for member in removed - members:
        index_set.remove(member)
    assert index_set.size == len(members)
    after = sorted(m for m in members if m >= start)
    assert index_set.successor(start) == (after[0] if after else min(members))


@pytest.mark.parametrize("size", [1, 2, 63, 64, 65, 127, 128, 129, 1000])
def test_a_whole_idle_list_is_indexed_word_by_word_as_member_by_member(size: int) -> None:
    whole = _index_set(list(range(size)))
    one_by_one = IndexSet(range(size))
    assert (whole.words, whole.summary, whole.size) == (
        one_by_one.words,
        one_by_one.summary,
        one_by_one.size,
    )
    assert [whole.successor(i) for i in range(size)] == list(range(size))
    sparse = _index_set([0, 2, 5])
    assert (sparse.words, sparse.size) == ({0: 0b100101}, 3)
