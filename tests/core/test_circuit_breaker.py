"""The service-level circuit breaker (issue 13 item 4): its state machine on its own, then
through both httpx transports against real backends."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import CircuitBreaker, CircuitOpen, LBError, Overloaded
from lbclient._breaker import CLOSED, HALF_OPEN, OPEN, BreakerState
from lbclient.testing import HTTPBackend

from ._support import PLAIN, Mode, assert_settled, send

FAST = CircuitBreaker(failure_rate=0.5, minimum_calls=4, window=4, open_for=0.2, half_open_calls=2)


SLOWER = dataclasses.replace(FAST, open_for=2.0)
"""For calls through a transport: open long enough to be seen open on a loaded machine."""


def breaker_stats(lb: lbclient.LoadBalancer) -> dict[str, Any]:
    stats: dict[str, Any] = lb.stats("orders")["limits"]["circuit_breaker"]
    return stats


def balancer(backends: list[HTTPBackend], **settings: Any) -> lbclient.LoadBalancer:
    return lbclient.LoadBalancer(
        {"orders": [{"address": b.address, "id": b.name} for b in backends]},
        **{**PLAIN, "circuit_breaker": SLOWER, **settings},
    )


# -- the state machine ------------------------------------------------------------------------


def test_it_opens_at_the_failure_rate_once_minimum_calls_are_known() -> None:
    breaker = BreakerState(FAST, "orders")
    for failed in (True, True, True):
        breaker.record(breaker.acquire(), failed)
    assert breaker.state == CLOSED  # 3 calls < minimum_calls, though all failed
    breaker = BreakerState(FAST, "orders")
    for failed in (True, False, False, False, True):
        breaker.record(breaker.acquire(), failed)
    assert breaker.state == CLOSED  # the last 4 (F F F T): 25% failed
    breaker.record(breaker.acquire(), True)
    assert breaker.state == OPEN  # the last 4 (F F T T): 50% >= failure_rate
    with pytest.raises(CircuitOpen) as caught:
        breaker.acquire()
    assert 0 < caught.value.retry_in <= FAST.open_for
    assert "trial call" in str(caught.value)


def test_half_open_admits_the_trial_calls_then_closes_or_reopens() -> None:
    breaker = BreakerState(FAST, "orders")
    for _ in range(4):
        breaker.record(breaker.acquire(), True)
    assert breaker.state == OPEN
    time.sleep(FAST.open_for)  # a sleep is never shorter than asked
    first, second = breaker.acquire(), breaker.acquire()
    assert breaker.state == HALF_OPEN
    with pytest.raises(CircuitOpen, match="half-open"):
        breaker.acquire()  # only two trial calls
    breaker.record(first, False)
    breaker.record(second, False)
    assert breaker.state == CLOSED
    for _ in range(4):
        breaker.record(breaker.acquire(), True)
    time.sleep(FAST.open_for)
    first, second = breaker.acquire(), breaker.acquire()
    breaker.record(first, False)
    breaker.record(second, True)  # 1 of 2 failed: >= 50%
    assert breaker.state == OPEN


def test_a_trial_call_without_outcome_gives_its_permit_back() -> None:
    breaker = BreakerState(FAST, "orders")
    for _ in range(4):
        breaker.record(breaker.acquire(), True)
    time.sleep(FAST.open_for)
    first, second = breaker.acquire(), breaker.acquire()
    breaker.release(first)  # cancelled, or refused locally: never stuck half-open
    third = breaker.acquire()
    for generation in (second, third):
        breaker.record(generation, False)
    assert breaker.state == CLOSED


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["call", "fail", "ok", "release", "wait"]), st.integers()))
)
def test_the_state_machine_never_sticks_or_goes_negative(steps: list[tuple[str, int]]) -> None:
    """Whatever the order of calls, outcomes and waits: counters stay sane, and once every
    admitted call has ended and open_for has passed, a call is admitted again."""
    config = CircuitBreaker(
        failure_rate=0.5, minimum_calls=2, window=3, open_for=0.001, half_open_calls=2
    )
    breaker = BreakerState(config, "orders")
    admitted: list[int] = []
    for action, pick in steps:
        if action == "call":
            try:
                admitted.append(breaker.acquire())
            except CircuitOpen as exc:
                refused = exc
                assert refused.retry_in >= 0
        elif action == "wait":
            time.sleep(0.001)
        elif admitted:
            generation = admitted.pop(pick % len(admitted))
            if action == "release":
                breaker.release(generation)
            else:
                breaker.record(generation, action == "fail")
        assert breaker._trials_left >= 0
        assert breaker._trials_out >= 0
        assert 0 <= breaker._failures <= len(breaker._calls) <= config.window
    for generation in admitted:
        breaker.release(generation)
    time.sleep(0.002)
    breaker.record(breaker.acquire(), False)  # never stuck open or half-open


# -- through the transports -----------------------------------------------------------------


def test_the_breaker_opens_refuses_at_once_and_recovers(
    mode: Mode, backends: list[HTTPBackend]
) -> None:
    for backend in backends:
        backend.status = 503
    lb = balancer(backends, retry=lbclient.RetryPolicy(attempts=1))
    for _ in range(4):
        assert send(mode, lb, "GET", "http://orders/x").status_code == 503
    assert breaker_stats(lb)["state"] == "open"
    sent = sum(b.requests for b in backends)
    with pytest.raises(CircuitOpen) as caught:
        send(mode, lb, "GET", "http://orders/x")
    assert isinstance(caught.value, LBError)
    assert caught.value.service == "orders"
    assert 0 < caught.value.retry_in <= SLOWER.open_for
    assert sum(b.requests for b in backends) == sent  # nothing was sent
    assert breaker_stats(lb)["refused"] == 1

    for backend in backends:
        backend.status = None
    time.sleep(caught.value.retry_in)
    assert send(mode, lb, "GET", "http://orders/x").status_code == 200  # a trial call
    assert breaker_stats(lb)["state"] == "half_open"
    assert send(mode, lb, "GET", "http://orders/x").status_code == 200
    assert breaker_stats(lb)["state"] == "closed"
    assert breaker_stats(lb)["opened"] == 1
    assert_settled(lb)
    assert lb.stats("orders")["limits"]["in_flight"] == 0
    lb.close()


def test_a_call_counts_once_with_its_final_outcome(mode: Mode, backends: list[HTTPBackend]) -> None:
    """One bad instance: its failed attempts are retried elsewhere and the calls succeed,
    so the breaker (service level) stays closed; outlier ejection is the instance's judge."""
    backends[0].status = 503
    lb = balancer(backends, scheduler="round_robin")
    for _ in range(8):
        assert send(mode, lb, "GET", "http://orders/x").status_code == 200
    assert backends[0].requests >= 2  # attempts did fail
    stats = breaker_stats(lb)
    assert stats["state"] == "closed"
    assert stats["failure_rate"] == 0.0
    lb.close()


def test_an_open_breaker_spends_no_retry_budget(mode: Mode, backends: list[HTTPBackend]) -> None:
    for backend in backends:
        backend.status = 503
    lb = balancer(backends, circuit_breaker=CircuitBreaker(minimum_calls=4, window=4))
    for _ in range(4):
        send(mode, lb, "GET", "http://orders/x")
    before = lb.stats("orders")
    for _ in range(20):
        with pytest.raises(CircuitOpen):
            send(mode, lb, "GET", "http://orders/x")
    after = lb.stats("orders")
    assert after["retries_refused_by_budget"] == before["retries_refused_by_budget"]
    assert after["retry_budget"] >= before["retry_budget"]
    assert sum(r["picks"] for r in after["instances"]) == sum(
        r["picks"] for r in before["instances"]
    )
    lb.close()


def test_a_trial_call_refused_by_a_limit_does_not_hold_half_open(
    backends: list[HTTPBackend],
) -> None:
    """A half-open permit goes back when the call never reached an instance (resilience4j
    #935): here every instance is at max_requests_per_instance."""
    one = backends[:1]
    one[0].status = 503
    lb = balancer(one, retry=lbclient.RetryPolicy(attempts=1), max_requests_per_instance=1)
    for _ in range(4):
        send("sync", lb, "GET", "http://orders/x")
    one[0].status = None
    time.sleep(SLOWER.open_for)
    transport = lbclient.LoadBalancedTransport(lb)
    with httpx.Client(transport=transport) as client:
        held = client.send(client.build_request("GET", "http://orders/x"), stream=True)
        assert breaker_stats(lb)["state"] == "half_open"  # held is trial call 1 of 2
        with pytest.raises(Overloaded):
            client.get("http://orders/x")  # trial 2, refused by the instance limit
        held.close()  # trial 1 succeeded
        assert client.get("http://orders/x").status_code == 200  # its permit came back
    assert breaker_stats(lb)["state"] == "closed"
    lb.close()


def test_a_breaker_per_service(backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": [backends[0].address], "users": [backends[1].address]},
        services={"orders": {"circuit_breaker": FAST}},
    )
    assert lb.service("orders").gate is not None
    assert lb.service("users").gate is None
    lb.close()


def test_a_panic_refusal_is_not_an_outcome(mode: Mode, backends: list[HTTPBackend]) -> None:
    """Every instance ejected and fail_open off: the panic threshold refuses the calls
    (NoAvailableInstance) before any is sent; the breaker counts only calls that reached an
    instance, so it neither opens on the refusals nor keeps a half-open permit for them."""
    for backend in backends[:2]:
        backend.status = 503
    lb = balancer(
        backends[:2],
        outlier=lbclient.OutlierDetection(consecutive_5xx=2, max_ejection_percent=100),
        fail_open=False,
        retry=lbclient.RetryPolicy(attempts=1),
        circuit_breaker=CircuitBreaker(minimum_calls=10, window=10),
    )
    answered = 0
    for _ in range(10):
        try:
            send(mode, lb, "GET", "http://orders/x")
        except lbclient.NoAvailableInstance:
            break
        answered += 1
    assert 0 < answered < 10  # both instances ejected after their 503s
    assert breaker_stats(lb)["calls"] == answered
    for _ in range(10):
        with pytest.raises(lbclient.NoAvailableInstance):
            send(mode, lb, "GET", "http://orders/x")
    assert breaker_stats(lb)["calls"] == answered
    assert breaker_stats(lb)["state"] == "closed"
    assert lb.stats("orders")["limits"]["in_flight"] == 0
    lb.close()


def test_listeners_hear_refusals_and_state_changes(backends: list[HTTPBackend]) -> None:
    heard: list[tuple[str, str]] = []

    class Heard(lbclient.LoadBalancerListener):
        def on_refused(self, service: str, reason: str) -> None:
            heard.append(("refused", reason))

        def on_circuit_state(self, service: str, state: str) -> None:
            heard.append(("state", state))

    one = backends[:1]
    one[0].status = 503
    lb = balancer(one, retry=lbclient.RetryPolicy(attempts=1), listeners=[Heard()])
    for _ in range(4):
        send("sync", lb, "GET", "http://orders/x")
    with pytest.raises(CircuitOpen):
        send("sync", lb, "GET", "http://orders/x")
    one[0].status = None
    time.sleep(SLOWER.open_for)
    for _ in range(2):
        send("sync", lb, "GET", "http://orders/x")
    assert heard == [
        ("state", "open"),
        ("refused", "circuit_open"),
        ("state", "half_open"),
        ("state", "closed"),
    ]
    lb.close()
