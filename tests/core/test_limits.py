"""Concurrency limits (Envoy's circuit breakers) through the httpx transports (issue 13 item 3).

Slots are held by real responses whose bodies are still open (a streamed response keeps
its call in flight), so no test depends on a delay being long enough. Every test ends with
the counters back at zero.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import ConfigurationError, LBError, Overloaded
from lbclient.testing import BlackHole, HTTPBackend

from ._support import PLAIN, Mode, assert_settled


def gate_stats(lb: lbclient.LoadBalancer, service: str = "orders") -> dict[str, Any]:
    limits: dict[str, Any] = lb.stats(service)["limits"]
    return limits


def assert_released(lb: lbclient.LoadBalancer) -> None:
    assert_settled(lb)
    limits = gate_stats(lb)
    assert limits.get("in_flight", 0) == 0, limits
    assert limits.get("pending", 0) == 0, limits
    assert limits.get("retrying", 0) == 0, limits


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.002)


class Caller:
    """Requests through one transport of either mode, from this thread; ``hold`` leaves a
    streamed response open (its call keeps its slot) until ``release``."""

    def __init__(self, mode: Mode, lb: lbclient.LoadBalancer, **options: Any) -> None:
        self.mode = mode
        if mode == "sync":
            self.client: Any = httpx.Client(transport=lbclient.LoadBalancedTransport(lb, **options))
        else:
            self.loop = asyncio.new_event_loop()
            self.client = httpx.AsyncClient(
                transport=lbclient.AsyncLoadBalancedTransport(lb, **options)
            )
        self.held: list[httpx.Response] = []

    def _run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def get(self, url: str = "http://orders/x") -> httpx.Response:
        if self.mode == "sync":
            response: httpx.Response = self.client.get(url)
            return response
        return self._run(self.client.get(url))  # type: ignore[no-any-return]

    def hold(self, url: str = "http://orders/x") -> httpx.Response:
        request = self.client.build_request("GET", url)
        if self.mode == "sync":
            response = self.client.send(request, stream=True)
        else:
            response = self._run(self.client.send(request, stream=True))
        self.held.append(response)
        return response  # type: ignore[no-any-return]

    def release(self, response: httpx.Response | None = None) -> None:
        response = response or self.held[0]
        self.held.remove(response)
        if self.mode == "sync":
            response.close()
        else:
            self._run(response.aclose())

    def close(self) -> None:
        for response in list(self.held):
            self.release(response)
        if self.mode == "sync":
            self.client.close()
        else:
            self._run(self.client.aclose())
            self.loop.close()


@pytest.fixture
def one() -> Iterator[HTTPBackend]:
    backend = HTTPBackend("a").start()
    yield backend
    backend.stop()


def balancer(backends: list[HTTPBackend], **settings: Any) -> lbclient.LoadBalancer:
    return lbclient.LoadBalancer(
        {"orders": [{"address": b.address, "id": b.name} for b in backends]},
        **{**PLAIN, **settings},
    )


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_requests", 0),
        ("max_requests", -1),
        ("max_requests", 1.5),
        ("max_requests", True),
        ("max_requests", "10"),
        ("max_pending", -1),
        ("max_pending", None),
        ("max_retries", -1),
        ("max_requests_per_instance", 0),
        ("pending_timeout", 0),
        ("pending_timeout", float("inf")),
        ("pending_timeout", None),
        ("circuit_breaker", {"failure_rate": 0.5}),
    ],
)
def test_a_bad_limit_is_refused_at_construction(setting: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]}, **{setting: value})
    with pytest.raises(ConfigurationError, match=setting):
        lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]}, services={"orders": {setting: value}})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"minimum_calls": 0},
        {"window": 0},
        {"minimum_calls": 20, "window": 10},
        {"open_for": 0},
        {"open_for": float("nan")},
        {"half_open_calls": 0},
    ],
)
def test_a_bad_circuit_breaker_is_refused_naming_the_setting(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        lbclient.CircuitBreaker(**kwargs)


def test_no_limit_means_no_gate(one: HTTPBackend) -> None:
    lb = balancer([one])
    state = lb.service("orders")
    assert state.gate is None
    assert lb.stats("orders")["limits"] is None
    lb.close()


# -- max_requests and max_pending ----------------------------------------------------------


def test_overflow_raises_overloaded_at_once_and_is_counted(mode: Mode, one: HTTPBackend) -> None:
    lb = balancer([one], max_requests=2)
    caller = Caller(mode, lb)
    try:
        caller.hold()
        caller.hold()
        with pytest.raises(Overloaded) as caught:
            caller.get()  # max_pending=0: refused without a wait (no queue to time out in)
        assert gate_stats(lb)["refused_pending_timeout"] == 0
        assert isinstance(caught.value, LBError)
        assert caught.value.limit == "max_requests"
        assert caught.value.service == "orders"
        assert "max_requests=2" in str(caught.value)
        assert one.requests == 2  # the refused call was not sent
        assert gate_stats(lb)["refused_overflow"] == 1
        assert gate_stats(lb)["in_flight"] == 2
        caller.release()
        assert caller.get().status_code == 200  # a slot came free with the body's close
    finally:
        caller.close()
    assert_released(lb)
    lb.close()


def test_services_override_the_limits(one: HTTPBackend) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": [one.address], "users": [one.address]},
        max_requests=1,
        services={"users": {"max_requests": None}},
    )
    assert lb.service("orders").gate is not None
    assert lb.service("users").gate is None
    lb.close()


def test_pending_waiters_get_slots_in_order(mode: Mode, one: HTTPBackend) -> None:
    lb = balancer([one], max_requests=1, max_pending=3, pending_timeout=30)
    holder = Caller(mode, lb)
    holder.hold()
    errors: list[BaseException] = []

    def wait_in_line(index: int) -> None:
        caller = Caller(mode, lb)
        try:
            caller.get(f"http://orders/w{index}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            caller.close()

    threads = []
    for index in range(3):
        thread = threading.Thread(target=wait_in_line, args=(index,))
        thread.start()
        threads.append(thread)
        wait_until(lambda index=index: gate_stats(lb)["pending"] == index + 1)
    extra = Caller(mode, lb)
    with pytest.raises(Overloaded) as caught:  # the queue is full: refused at once
        extra.get()
    extra.close()
    assert caught.value.limit == "max_requests"
    holder.release()
    for thread in threads:
        thread.join(30)
    holder.close()
    assert not errors
    # One slot: each waiter's request reached the server alone, so the server saw the order
    # in which they were given the slot.
    assert one.paths[1:] == ["/w0", "/w1", "/w2"]
    assert_released(lb)
    lb.close()


def test_a_waiter_times_out_with_overloaded(mode: Mode, one: HTTPBackend) -> None:
    lb = balancer([one], max_requests=1, max_pending=1, pending_timeout=0.2)
    caller = Caller(mode, lb)
    try:
        caller.hold()
        started = time.monotonic()
        with pytest.raises(Overloaded) as caught:
            caller.get()
        assert time.monotonic() - started >= 0.19
        assert caught.value.limit == "max_pending"
        assert gate_stats(lb)["refused_pending_timeout"] == 1
    finally:
        caller.close()
    assert_released(lb)
    lb.close()


def test_a_waiter_never_waits_past_the_call_deadline(mode: Mode, one: HTTPBackend) -> None:
    lb = balancer(
        [one],
        max_requests=1,
        max_pending=1,
        pending_timeout=30,
        retry=lbclient.RetryPolicy(timeout=0.2),
    )
    caller = Caller(mode, lb)
    try:
        caller.hold()
        started = time.monotonic()
        with pytest.raises(Overloaded):
            caller.get()
        assert time.monotonic() - started < 10  # the deadline, not the 30 s queue timeout
    finally:
        caller.close()
    assert_released(lb)
    lb.close()


def test_a_cancelled_waiting_task_leaves_the_queue(one: HTTPBackend) -> None:
    lb = balancer([one], max_requests=1, max_pending=4, pending_timeout=30)

    async def scenario() -> None:
        transport = lbclient.AsyncLoadBalancedTransport(lb)
        async with httpx.AsyncClient(transport=transport) as client:
            held = await client.send(client.build_request("GET", "http://orders/x"), stream=True)
            waiting = [asyncio.create_task(client.get("http://orders/x")) for _ in range(3)]
            while gate_stats(lb)["pending"] < 3:  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0.002)
            waiting[0].cancel()
            waiting[2].cancel()
            await asyncio.gather(waiting[0], waiting[2], return_exceptions=True)
            assert gate_stats(lb)["pending"] == 1
            await held.aclose()  # the slot goes to the one that still waits
            response = await waiting[1]
            assert response.status_code == 200
            assert waiting[0].cancelled()
            assert waiting[2].cancelled()

    asyncio.run(scenario())
    assert_released(lb)
    lb.close()


def test_slots_never_leak_under_many_threads(one: HTTPBackend) -> None:
    one.delay = 0.002
    lb = balancer([one], max_requests=3, max_pending=4, pending_timeout=5)
    client = httpx.Client(transport=lbclient.LoadBalancedTransport(lb))  # one, shared
    outcomes: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(15):
            try:
                status = str(client.get("http://orders/x").status_code)
            except Overloaded as exc:
                status = exc.limit
            except Exception as exc:  # shown by the assertion below
                status = repr(exc)
            with lock:
                outcomes.append(status)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    client.close()
    assert len(outcomes) == 16 * 15
    assert set(outcomes) <= {"200", "max_requests", "max_pending"}
    assert "max_requests" in outcomes  # 16 callers for 3 slots and 4 places in line
    stats = gate_stats(lb)
    assert stats["refused_overflow"] == outcomes.count("max_requests")
    assert stats["refused_pending_timeout"] == outcomes.count("max_pending")
    assert_released(lb)
    lb.close()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_slots_never_leak_when_tasks_are_cancelled_anywhere(seed: int) -> None:
    """Tasks cancelled while waiting for a slot, while sending, while reading: the limits
    and the instances settle at zero, whatever the interleaving."""
    rng = random.Random(seed)
    with HTTPBackend("a", delay=0.003) as backend:
        lb = balancer([backend], max_requests=3, max_pending=6, pending_timeout=5)

        async def one_call(client: httpx.AsyncClient) -> None:
            try:
                response = await client.get("http://orders/x")
                assert response.status_code == 200
            except Overloaded:
                pass

        async def scenario() -> None:
            transport = lbclient.AsyncLoadBalancedTransport(lb)
            async with httpx.AsyncClient(transport=transport) as client:
                tasks = [asyncio.create_task(one_call(client)) for _ in range(24)]
                for task in tasks:
                    await asyncio.sleep(rng.random() * 0.004)
                    if rng.random() < 0.4:
                        task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(scenario())
        assert_released(lb)
        lb.close()


def test_black_holed_calls_free_their_slots_at_the_deadline(mode: Mode) -> None:
    """An upstream that never answers: the admitted calls are cut by their deadline, the
    waiters then get the slots (and are cut in turn), the others are refused at once."""
    with BlackHole() as hole:
        lb = lbclient.LoadBalancer(
            {"orders": [hole.address]},
            **PLAIN,
            max_requests=2,
            max_pending=2,
            pending_timeout=30,
            retry=lbclient.RetryPolicy(timeout=1.0),  # long enough to see both queued
        )
        outcomes: list[str] = []
        lock = threading.Lock()
        # The first two calls are cut well before the waiters' own deadlines: a waiter that
        # started a few milliseconds after them could otherwise reach its deadline while
        # still waiting for their slots (and be refused, max_pending), not after taking one.
        first = lbclient.RetryPolicy(timeout=0.5)

        def call(**options: Any) -> None:
            caller = Caller(mode, lb, **options)
            try:
                caller.get()
                outcome = "answered"
            except lbclient.DeadlineExceeded:
                outcome = "deadline"
            except Overloaded as exc:
                outcome = exc.limit
            finally:
                caller.close()
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=call, kwargs={"retry": first}) for _ in range(2)]
        threads += [threading.Thread(target=call) for _ in range(2)]
        for thread in threads[:2]:
            thread.start()
        wait_until(lambda: gate_stats(lb)["in_flight"] == 2)
        for thread in threads[2:]:
            thread.start()
        wait_until(lambda: gate_stats(lb)["pending"] == 2)
        extra = Caller(mode, lb)
        try:
            with pytest.raises(Overloaded):
                extra.get()  # two running, two waiting: no place left
        finally:
            extra.close()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == ["deadline"] * 4  # the waiters ran after the first two
        assert_released(lb)
        lb.close()


# -- max_retries ---------------------------------------------------------------------------


def test_max_retries_zero_stops_retries_and_counts_them(
    mode: Mode, backends: list[HTTPBackend]
) -> None:
    for backend in backends:
        backend.status = 503
    refusals: list[int] = []

    class Refusals(lbclient.LoadBalancerListener):
        def on_retry_refused(self, service: str, attempt: int, failure: object) -> None:
            refusals.append(attempt)

    lb = lbclient.LoadBalancer(
        {"orders": [b.address for b in backends]},
        **PLAIN,
        max_retries=0,
        listeners=[Refusals()],
    )
    caller = Caller(mode, lb)
    try:
        assert caller.get().status_code == 503
    finally:
        caller.close()
    assert sum(b.requests for b in backends) == 1  # the answer came back, no retry
    assert gate_stats(lb)["retries_refused_by_limit"] == 1
    assert refusals == [1]  # listeners hear of it as of a budget refusal
    assert_released(lb)
    lb.close()


def test_a_retrying_call_holds_one_retry_slot(mode: Mode, backends: list[HTTPBackend]) -> None:
    backends[0].status = 503
    backends[1].status = 503
    lb = balancer(backends, max_retries=1, scheduler="round_robin")
    caller = Caller(mode, lb)
    try:
        # Until one call hits c, each retries; one slot is enough for a call's retries.
        for _ in range(3):
            assert caller.get().status_code == 200
        held = None
        while held is None:  # a call on c at once keeps no retry slot; one that retried does
            response = caller.hold()
            if gate_stats(lb)["retrying"] == 1:
                held = response
            else:
                caller.release(response)
        backends[2].status = 503  # every call wants to retry now
        before = sum(b.requests for b in backends)
        assert caller.get().status_code == 503  # the one retry slot is taken: no retry
        assert sum(b.requests for b in backends) == before + 1
        assert gate_stats(lb)["retries_refused_by_limit"] == 1
        caller.release(held)
    finally:
        caller.close()
    assert_released(lb)
    lb.close()


# -- max_requests_per_instance ---------------------------------------------------------------


def test_a_full_instance_is_skipped_then_overloaded(
    mode: Mode, backends: list[HTTPBackend]
) -> None:
    lb = balancer(backends[:2], max_requests_per_instance=1, scheduler="least_request")
    caller = Caller(mode, lb)
    try:
        first = caller.hold()
        second = caller.hold()
        assert {first.headers["X-Backend"], second.headers["X-Backend"]} == {"a", "b"}
        with pytest.raises(Overloaded) as caught:
            caller.get()
        assert caught.value.limit == "max_requests_per_instance"
        assert gate_stats(lb)["refused_per_instance"] == 1
        caller.release(first)
        assert caller.get().status_code == 200
    finally:
        caller.close()
    assert_settled(lb)
    lb.close()


@pytest.mark.parametrize("scheduler", ["round_robin", "ring_hash", "random", "peak_ewma"])
def test_every_scheduler_skips_full_instances(backends: list[HTTPBackend], scheduler: str) -> None:
    lb = balancer(backends, max_requests_per_instance=1, scheduler=scheduler)
    caller = Caller("sync", lb)
    try:
        held = [caller.hold() for _ in range(3)]
        assert sorted(r.headers["X-Backend"] for r in held) == ["a", "b", "c"]
        with pytest.raises(Overloaded):
            caller.get()
    finally:
        caller.close()
    assert_settled(lb)
    lb.close()


# -- the admission core alone ----------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 3),
    pending=st.integers(0, 3),
    steps=st.lists(
        st.tuples(st.sampled_from(["enter", "end", "settle", "cancel"]), st.integers(0, 99)),
        max_size=60,
    ),
)
def test_the_gate_keeps_its_counts_and_its_order(
    limit: int, pending: int, steps: list[tuple[str, int]]
) -> None:
    """Calls arrive, end, stop waiting or give up in any order: the slots in use are exactly
    the granted calls still running, never more than the limit; the queue never exceeds
    max_pending and hands slots over first come, first served."""
    from lbclient._limits import CallGate, Ticket

    gate = CallGate("orders", max_requests=limit, max_pending=pending, pending_timeout=1)
    running: list[Ticket] = []
    waiting: list[Ticket] = []
    granted_order: list[Ticket] = []
    queued_order: list[Ticket] = []
    for action, pick in steps:
        if action == "enter":
            try:
                ticket = gate.enter()
            except Overloaded:
                assert len(running) + len([t for t in waiting if t.granted]) == limit
                continue
            if not ticket.queued:
                running.append(ticket)
            else:
                gate.arm(ticket, lambda ticket=ticket: granted_order.append(ticket))
                waiting.append(ticket)
                queued_order.append(ticket)
        elif action == "end" and running:
            running.pop(pick % len(running)).drop()
        elif action == "settle" and waiting:
            ticket = waiting.pop(pick % len(waiting))
            try:
                gate.settle(ticket)
            except Overloaded:
                assert not ticket.granted
            else:
                running.append(ticket)
        elif action == "cancel" and waiting:
            gate.abandon(waiting.pop(pick % len(waiting)))
        holding = len(running) + len([t for t in waiting if t.granted])
        assert gate.active == holding <= limit
        assert len(gate._waiters) == len([t for t in waiting if not t.granted]) <= pending
    granted = [t for t in queued_order if t in granted_order]
    assert granted_order == granted  # woken in the order they queued
    for ticket in running:
        ticket.drop()
    for ticket in waiting:
        gate.abandon(ticket)
    assert gate.active == 0
    assert not gate._waiters
