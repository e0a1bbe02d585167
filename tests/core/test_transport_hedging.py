"""Hedged requests through the httpx transports (issue 13 item 5), against real backends.

One backend is made slow (``delay``), the others answer at once: a request that lands on
the slow one is hedged to another after the hedge delay, and the answer shows which backend
won. Nothing here asserts a duration.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import ConfigurationError, HedgePolicy, LoadBalancerListener, Outcome
from lbclient._hedge import MIN_SAMPLES, LatencyHistogram
from lbclient._racing import Race
from lbclient._retry import RetryBudget, RetryState
from lbclient.testing import HTTPBackend

from ._support import PLAIN, Mode, assert_settled

EAGER = HedgePolicy(delay=0.05, budget_ratio=1.0, budget_cap=10)
"""Hedge after 50 ms, with a budget that never refuses (a hedge per request)."""


class Outcomes(LoadBalancerListener):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Outcome]] = []
        self.hedged_to: list[str] = []
        self.refused = 0
        self._lock = threading.Lock()

    def on_complete(self, service: str, instance: Any, outcome: Outcome) -> None:
        with self._lock:
            self.seen.append((instance.id, outcome))

    def on_hedge(self, service: str, attempt: int, instance: Any) -> None:
        with self._lock:
            self.hedged_to.append(instance.id)

    def on_hedge_refused(self, service: str, attempt: int) -> None:
        with self._lock:
            self.refused += 1


@pytest.fixture
def pair() -> Iterator[tuple[HTTPBackend, HTTPBackend]]:
    """A slow backend (5 s per answer) and a fast one."""
    slow, fast = HTTPBackend("slow", delay=5.0).start(), HTTPBackend("fast").start()
    yield slow, fast
    slow.delay = 0
    slow.stop()
    fast.stop()


def balancer(*backends: HTTPBackend, **settings: Any) -> lbclient.LoadBalancer:
    return lbclient.LoadBalancer(
        {"svc": [{"address": b.address, "id": b.name} for b in backends]}, **PLAIN, **settings
    )


def run(mode: Mode, lb: lbclient.LoadBalancer, requests: list[tuple[str, dict[str, Any]]],
        **options: Any) -> list[httpx.Response]:  # fmt: skip
    """Send ``(method, kwargs)`` requests in order through one client; bodies are read."""
    if mode == "sync":
        transport = lbclient.LoadBalancedTransport(lb, **options)
        with httpx.Client(transport=transport, timeout=30) as client:
            return [client.request(m, "http://svc/x", **kw) for m, kw in requests]

    async def go() -> list[httpx.Response]:
        transport = lbclient.AsyncLoadBalancedTransport(lb, **options)
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            return [await client.request(m, "http://svc/x", **kw) for m, kw in requests]

    return asyncio.run(go())


def winners(responses: list[httpx.Response]) -> list[str]:
    return [r.headers["X-Backend"] for r in responses]


def test_a_slow_attempt_is_beaten_by_a_hedge_on_another_instance(mode: Mode, pair) -> None:
    slow, fast = pair
    listener = Outcomes()
    with balancer(slow, fast, hedge=EAGER, listeners=[listener]) as lb:
        responses = run(mode, lb, [("GET", {})] * 6)
        assert winners(responses) == ["fast"] * 6
        assert all(r.json()["backend"] == "fast" for r in responses)  # the winner's body
        stats = lb.stats("svc")
        # round robin put every other request on the slow one (a fast answer delayed past
        # 50 ms by a loaded machine is hedged too)
        assert stats["hedges"] >= 3
        assert listener.hedged_to.count("fast") == 3  # every request on the slow one
        assert len(listener.hedged_to) == stats["hedges"]
        if mode == "async":  # the losers were cancelled at once
            assert_settled(lb)
        on_slow = [o for i, o in listener.seen if i == "slow"]
        assert all(o.cancelled for o in on_slow)  # a lost hedge is never a failure
        slow.delay = 0  # the sync losers run to their end, then release their slots
        assert _eventually(lambda: all(r["in_flight"] == 0 for r in lb.stats("svc")["instances"]))
        assert {r["id"]: r["failures"] for r in lb.stats("svc")["instances"]} == {
            "slow": 0,
            "fast": 0,
        }


def test_non_idempotent_requests_and_streamed_bodies_are_never_hedged(mode: Mode, pair) -> None:
    slow, fast = pair
    slow.delay = 0.3
    with balancer(slow, fast, hedge=EAGER) as lb:

        def body() -> Iterator[bytes]:
            yield b"streamed"

        requests: list[tuple[str, dict[str, Any]]] = [("POST", {"content": b"x"})] * 2
        if mode == "sync":
            requests += [("PUT", {"content": body()}), ("PUT", {"content": body()})]
        responses = run(mode, lb, requests)
        assert sorted(winners(responses)) == sorted(["slow", "fast"] * (len(requests) // 2))
        assert lb.stats("svc")["hedges"] == 0


def test_the_budget_limits_hedges(mode: Mode, pair) -> None:
    slow, fast = pair
    slow.delay = 0.2
    stingy = HedgePolicy(delay=0.02, budget_ratio=0.0, budget_cap=10)  # 10 banked tokens
    listener = Outcomes()
    with balancer(slow, fast, hedge=stingy, listeners=[listener]) as lb:
        responses = run(mode, lb, [("GET", {})] * 24)
        stats = lb.stats("svc")
        assert listener.refused == stats["hedges_refused_by_budget"]
        # 12 requests land on the slow backend, each wants a hedge, 10 get one
        assert stats["hedges"] == 10
        assert stats["hedges_refused_by_budget"] >= 2
        assert winners(responses).count("slow") >= 2


def test_a_transport_policy_overrides_the_service_and_a_percentile_waits_for_samples(
    mode: Mode, pair
) -> None:
    slow, fast = pair
    slow.delay = 0
    with balancer(slow, fast, hedge=HedgePolicy(delay=60.0)) as lb:
        policy = HedgePolicy(delay="p90", budget_ratio=1.0)
        warm = run(mode, lb, [("GET", {})] * MIN_SAMPLES, hedge=policy)
        assert lb.stats("svc")["hedges"] == 0
        assert len(warm) == MIN_SAMPLES
        slow.delay = 5.0
        assert winners(run(mode, lb, [("GET", {})] * 4, hedge=policy)) == ["fast"] * 4
        assert lb.stats("svc")["hedges"] >= 2  # (a new connection may be hedged too)


def test_hedges_and_cancellations_from_many_threads_leave_nothing_in_flight(pair) -> None:
    slow, fast = pair
    slow.delay = 0.1
    other = HTTPBackend("other").start()
    try:
        hedge = HedgePolicy(delay=0.005, max_hedges=2, budget_ratio=1.0)
        with balancer(slow, fast, other, hedge=hedge) as lb:
            transport = lbclient.LoadBalancedTransport(lb, hedge_threads=8)
            with httpx.Client(transport=transport, timeout=30) as client:

                def worker() -> None:
                    for _ in range(10):
                        assert client.get("http://svc/x").status_code == 200

                threads = [threading.Thread(target=worker) for _ in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                slow.delay = 0
                assert _eventually(
                    lambda: all(r["in_flight"] == 0 for r in lb.stats("svc")["instances"])
                )
            assert lb.stats("svc")["hedges"] > 0
            assert all(r["failures"] == 0 for r in lb.stats("svc")["instances"])
            assert_settled(lb)
    finally:
        other.stop()


def test_hedged_tasks_cancelled_by_their_caller_leave_nothing_in_flight(pair) -> None:
    slow, fast = pair
    fast.delay = 0.05
    listener = Outcomes()
    hedge = HedgePolicy(delay=0.01, budget_ratio=1.0, budget_cap=10)

    async def go(lb: lbclient.LoadBalancer) -> None:
        transport = lbclient.AsyncLoadBalancedTransport(lb)
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            # no more than the 10 hedges the budget banks (a burst cannot borrow more)
            tasks = [asyncio.create_task(client.get("http://svc/x")) for _ in range(10)]
            await asyncio.sleep(0.03)  # the hedges have left, nobody has answered
            for task in tasks[::2]:
                task.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            answered = [r for r in done if isinstance(r, httpx.Response)]
            assert answered
            assert all(r.headers["X-Backend"] == "fast" for r in answered)

    with balancer(slow, fast, hedge=hedge, listeners=[listener]) as lb:
        asyncio.run(go(lb))
        assert_settled(lb)
        assert all(r["failures"] == 0 for r in lb.stats("svc")["instances"])
        assert any(o.cancelled for i, o in listener.seen if i == "slow")


def test_a_busy_thread_pool_sends_requests_unhedged(pair) -> None:
    slow, fast = pair
    slow.delay = 0.2
    with balancer(slow, fast, hedge=EAGER) as lb:
        responses = run("sync", lb, [("GET", {})] * 2, hedge_threads=1)
        assert winners(responses) == ["slow", "fast"] or winners(responses) == ["fast", "slow"]
        assert lb.stats("svc")["hedges"] == 1  # allowed by the budget, no thread to run it
        assert_settled(lb)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: HedgePolicy(delay=0), "delay"),
        (lambda: HedgePolicy(delay=float("nan")), "delay"),
        (lambda: HedgePolicy(delay="p100"), "percentile"),
        (lambda: HedgePolicy(delay="fast"), "percentile"),
        (lambda: HedgePolicy(max_hedges=0), "max_hedges"),
        (lambda: HedgePolicy(max_hedges=True), "max_hedges"),
        (lambda: HedgePolicy(budget_ratio=1.5), "budget_ratio"),
        (lambda: HedgePolicy(budget_min_per_second=-1), "budget_min_per_second"),
        (lambda: HedgePolicy(min_delay=0), "min_delay"),
        (lambda: HedgePolicy(budget_cap=0.5), "budget_cap"),
        (lambda: lbclient.LoadBalancer({"svc": ["127.0.0.1:1"]}, hedge="p95"), "hedge"),
        (
            lambda: lbclient.LoadBalancer({"svc": ["127.0.0.1:1"]}, services={"svc": {"hedge": 1}}),
            "hedge",
        ),
        (lambda: lbclient.LoadBalancedTransport(_LB, hedge=0.05), "hedge"),
        (lambda: lbclient.AsyncLoadBalancedTransport(_LB, hedge=0.05), "hedge"),
        (lambda: lbclient.LoadBalancedTransport(_LB, hedge_threads=0), "hedge_threads"),
    ],
)
def test_settings_are_checked_when_given(make: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make()


_LB = lbclient.LoadBalancer({"svc": ["127.0.0.1:1"]})


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-5, max_value=100.0), min_size=MIN_SAMPLES, max_size=400),
    st.sampled_from([0.5, 0.9, 0.95, 0.99]),
)
def test_the_histogram_percentile_is_within_one_bucket_above(
    samples: list[float], q: float
) -> None:
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.record(sample)
    ordered = sorted(samples)
    exact = ordered[max(0, -(-int(q * len(ordered) * 1000) // 1000) - 1)]
    estimate = histogram.percentile(q)
    assert estimate is not None
    assert exact * 0.999 <= estimate <= exact * 1.1 * 1.001


def test_the_histogram_waits_for_enough_samples() -> None:
    histogram = LatencyHistogram()
    for _ in range(MIN_SAMPLES - 1):
        histogram.record(0.01)
    assert histogram.percentile(0.95) is None
    histogram.record(0.01)
    assert histogram.percentile(0.95) == pytest.approx(0.01, rel=0.1)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=5),
)
def test_a_race_hedges_only_untried_instances_within_max_hedges_and_budget(
    instances: int, max_hedges: int, cap: int
) -> None:
    addresses = [f"127.0.0.1:{1000 + i}" for i in range(instances)]
    with lbclient.LoadBalancer({"svc": addresses}, **PLAIN) as lb:
        state = lb.service("svc")
        policy = HedgePolicy(delay=0.001, max_hedges=max_hedges, budget_ratio=0, budget_cap=cap)
        hedging = state.hedges.get(policy)
        retry = RetryState(
            lbclient.RetryPolicy(), state.retry_budget, method="GET", replayable=True,
            context=lbclient.PickContext(),
        )  # fmt: skip
        race = Race(hedging)
        handles = [state.pick(retry.next_context())]
        retry.record(handles[0].instance.id)
        while race.wait() is not None:
            hedge = race.hedge(state, retry)
            if hedge is not None:
                handles.append(hedge)
        ids = [h.instance.id for h in handles]
        assert len(set(ids)) == len(ids)
        assert len(handles) - 1 == min(max_hedges, instances - 1, cap)
        assert lb.stats("svc")["hedges"] == len(handles) - 1
        for handle in handles:
            handle.cancel()
        assert_settled(lb)


def test_a_hedge_budget_banks_at_most_its_cap() -> None:
    budget = RetryBudget(0.05, 0.0, cap=10.0)
    for _ in range(10_000):
        budget.deposit()
    assert budget.balance == 10.0


def _eventually(predicate: Any, timeout: float = 10.0) -> bool:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        event.wait(0.01)
    return bool(predicate())


def test_the_deadline_bounds_every_hedge(mode: Mode, pair) -> None:
    slow, fast = pair
    fast.delay = 5.0  # both slow: the first attempt and its hedge are cut at the deadline
    policy = lbclient.RetryPolicy(timeout=0.3)
    with balancer(slow, fast, hedge=EAGER, retry=policy) as lb:
        with pytest.raises(lbclient.DeadlineExceeded):
            run(mode, lb, [("GET", {})])
        assert lb.stats("svc")["hedges"] == 1
        fast.delay = slow.delay = 0
        assert _eventually(lambda: all(r["in_flight"] == 0 for r in lb.stats("svc")["instances"]))


def test_a_hedged_call_holds_one_call_slot_until_its_last_attempt_ends(mode: Mode, pair) -> None:
    slow, fast = pair
    slow.delay = 2.0
    hedge = HedgePolicy(delay=0.2, budget_ratio=1.0, budget_cap=10)
    with balancer(slow, fast, hedge=hedge, max_requests=1) as lb:
        for _ in range(2):  # round robin: one of two lands on the slow one and is hedged
            # a hedge is an attempt, not another call: max_requests=1 lets it leave
            assert winners(run(mode, lb, [("GET", {})])) == ["fast"]
            if lb.stats("svc")["hedges"]:
                break
        assert lb.stats("svc")["hedges"] == 1
        if mode == "sync":  # the losing thread still waits on the slow instance: the call
            with pytest.raises(lbclient.Overloaded):  # keeps its slot until that attempt ends
                run(mode, lb, [("GET", {})])
        assert _eventually(lambda: lb.stats("svc")["limits"]["in_flight"] == 0)
        slow.delay = 0
        assert len(run(mode, lb, [("GET", {})])) == 1
        assert lb.stats("svc")["limits"]["refused_overflow"] == (1 if mode == "sync" else 0)
        assert _eventually(lambda: all(r["in_flight"] == 0 for r in lb.stats("svc")["instances"]))
