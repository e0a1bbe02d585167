"""Load-aware schedulers prefer the less loaded or faster instance.

Load is real endpoint state: requests put in flight with ``Endpoint.begin()`` and latency fed
through ``Endpoint.finish(Outcome(...))``, exactly what the balancer does on each attempt.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbclient import Endpoint, PickContext
from lbclient.schedulers.peak_ewma import PENALTY, peak_ewma_load

from ._support import answer, build, endpoints, load

CTX = PickContext()


def picks(name: str, items: list[Endpoint], count: int = 2000, **options: object) -> Counter[int]:
    scheduler = build(name, items, 5, **options)
    return Counter(items.index(scheduler.pick(CTX)) for _ in range(count))


@pytest.mark.parametrize("name", ["lc", "wlc", "sed", "nq"])
def test_full_scan_schedulers_pick_the_least_loaded(name: str) -> None:
    items = endpoints([1.0, 1.0, 1.0, 1.0])
    for endpoint, count in zip(items, [3, 1, 0, 2], strict=True):
        load(endpoint, count)
    assert picks(name, items, 50) == {2: 50}


def test_lc_ties_rotate_instead_of_piling_on_the_first() -> None:
    items = endpoints([1.0] * 4)
    assert picks("lc", items, 400) == {0: 100, 1: 100, 2: 100, 3: 100}


def test_wlc_divides_by_weight() -> None:
    light, heavy = endpoints([1.0, 4.0])
    load(light, 2)
    load(heavy, 6)  # 2/1 > 6/4
    assert picks("wlc", [light, heavy], 20) == {1: 20}


def test_sed_counts_the_request_being_placed() -> None:
    light, heavy = endpoints([1.0, 3.0])
    assert picks("sed", [light, heavy], 20) == {1: 20}  # idle: 1/1 > 1/3
    load(heavy, 3)  # (3+1)/3 > (0+1)/1
    assert picks("sed", [light, heavy], 20) == {0: 20}


def test_nq_takes_an_idle_instance_before_a_faster_busy_one() -> None:
    light, heavy = endpoints([1.0, 10.0])
    load(heavy, 1)  # sed would still pick heavy: (1+1)/10 < 1/1
    assert picks("sed", [light, heavy], 20) == {1: 20}
    assert picks("nq", [light, heavy], 20) == {0: 20}


def test_least_request_never_picks_the_busiest_of_its_two_choices() -> None:
    items = endpoints([1.0, 1.0, 1.0])
    load(items[0], 5)
    got = picks("least_request", items)
    assert got[0] == 0
    assert got[1] > 800
    assert got[2] > 800


def test_least_request_weighted_follows_envoys_dynamic_weight() -> None:
    heavy, light = endpoints([2.0, 1.0])
    idle = picks("least_request", [heavy, light], 6000)
    assert 0.62 < idle[0] / 6000 < 0.71  # weight share 2/3
    load(heavy, 9)  # dynamic weight 2/10 against 1/1
    busy = picks("least_request", [heavy, light], 6000)
    assert 0.12 < busy[0] / 6000 < 0.22  # 0.2 / (0.2 + 1) = 1/6


def test_least_request_bias_zero_ignores_load() -> None:
    heavy, light = endpoints([2.0, 1.0])
    load(heavy, 50)
    got = picks("least_request", [heavy, light], 6000, bias=0.0)
    assert 0.62 < got[0] / 6000 < 0.71


def test_twos_prefers_the_less_loaded_of_two_weighted_draws() -> None:
    items = endpoints([1.0, 1.0])
    load(items[0], 3)
    got = picks("twos", items, 4000)
    assert 0.2 < got[0] / 4000 < 0.3  # only when both draws land on it: 1/4


def test_peak_ewma_avoids_the_slow_instance() -> None:
    fast, slow, other = endpoints([1.0, 1.0, 1.0])
    answer(fast, 0.010, 5)
    answer(other, 0.012, 5)
    answer(slow, 0.500)
    got = picks("peak_ewma", [fast, slow, other])
    assert got[1] == 0  # it loses every comparison
    assert got[0] > got[2] > 0


def test_peak_ewma_weighs_latency_by_requests_in_flight() -> None:
    fast, slow = endpoints([1.0, 1.0])
    answer(fast, 0.010, 3)
    answer(slow, 0.100, 3)
    assert picks("peak_ewma", [fast, slow], 50) == {0: 50}
    load(fast, 20)  # 0.010 x 21 > 0.100 x 1
    assert picks("peak_ewma", [fast, slow], 50) == {1: 50}


def test_peak_ewma_penalises_pending_requests_without_any_answer() -> None:
    hung, known, fresh = endpoints([1.0, 1.0, 1.0])
    load(hung, 1)  # never answered, one pending: Finagle's penalty
    answer(known, 2.0)
    assert peak_ewma_load(hung) >= PENALTY
    assert peak_ewma_load(fresh) == 0.0  # nothing known, nothing pending: try it
    got = picks("peak_ewma", [hung, known, fresh])
    assert got[0] == 0
    assert got[2] > got[1] > 0


LOADS = st.lists(st.tuples(st.integers(0, 6), st.sampled_from([0.5, 1.0, 2.0, 3.0])), min_size=2)


@settings(max_examples=60, deadline=None)
@given(state=LOADS.filter(lambda s: len(s) <= 12))
def test_full_scans_are_exact_for_any_load(state: list[tuple[int, float]]) -> None:
    items = endpoints([weight for _, weight in state])
    for endpoint, (count, _) in zip(items, state, strict=True):
        load(endpoint, count)
    costs = {
        "lc": lambda e: e.in_flight,
        "wlc": lambda e: e.in_flight / e.weight,
        "sed": lambda e: (e.in_flight + 1) / e.weight,
    }
    for name, cost in costs.items():
        chosen = build(name, items).pick(CTX)
        assert cost(chosen) == pytest.approx(min(cost(e) for e in items)), name
    chosen = build("nq", items).pick(CTX)
    if any(e.in_flight == 0 for e in items):
        assert chosen.in_flight == 0
    else:
        assert costs["sed"](chosen) == pytest.approx(min(costs["sed"](e) for e in items))


@settings(max_examples=40, deadline=None)
@given(loads=st.lists(st.integers(0, 6), min_size=2, max_size=10), seed=st.integers(0, 999))
def test_two_choices_never_pick_the_single_busiest(loads: list[int], seed: int) -> None:
    items = endpoints([1.0] * len(loads))
    for endpoint, count in zip(items, loads, strict=True):
        load(endpoint, count)
        answer(endpoint, 0.01)
    busiest = max(loads)
    if loads.count(busiest) > 1:
        return
    for name in ("least_request", "peak_ewma"):
        scheduler = build(name, items, seed)
        assert all(scheduler.pick(CTX).in_flight < busiest for _ in range(50)), name
