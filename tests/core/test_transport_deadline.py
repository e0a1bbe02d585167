"""A deadline across attempts, a per-try timeout and Retry-After (issue 13 items 1 and 2).

Real black-holed instances (listening sockets that never answer) and real HTTP backends.
Elapsed times are only checked against bounds far from the expected value (a sleep is never
shorter than asked; a cut call is seconds away from httpx's own 5 s timeout).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import ConfigurationError, DeadlineExceeded, LBError
from lbclient._retry import parse_retry_after
from lbclient.testing import BlackHole, HTTPBackend

from ._support import PLAIN, Mode, assert_settled, instances, send


@pytest.fixture
def holes() -> Iterator[list[BlackHole]]:
    made = [BlackHole() for _ in range(3)]
    yield made
    for hole in made:
        hole.close()


def _timed(mode: Mode, lb: lbclient.LoadBalancer, url: str, **kwargs: Any) -> tuple[Any, float]:
    """(response or exception, seconds) of one GET."""
    started = time.monotonic()
    try:
        result: Any = send(mode, lb, "GET", url, **kwargs)
    except Exception as exc:
        result = exc
    return result, time.monotonic() - started


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_deadline_cuts_the_call_over_black_holed_instances(
    mode: Mode, holes: list[BlackHole], method: str
) -> None:
    lb = lbclient.LoadBalancer({"orders": [h.address for h in holes]}, **PLAIN)
    policy = lbclient.RetryPolicy(timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        send(mode, lb, method, "http://orders/x", options={"retry": policy})
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 1.5  # without the deadline: httpx's 5 s read timeout, 3 times
    exc = caught.value
    assert isinstance(exc, httpx.TimeoutException)
    assert isinstance(exc, LBError)
    assert exc.service == "orders"
    assert exc.request.url == "http://orders/x"
    assert any("1 attempt(s) on" in note for note in exc.__notes__)
    assert isinstance(exc.__cause__, httpx.ReadTimeout)
    assert_settled(lb)
    (failed,) = [row for row in instances(lb, "orders") if row["failures"]]
    assert failed["failures"] == 1


def test_the_per_request_extension_overrides_the_policy(mode: Mode, holes: list[BlackHole]) -> None:
    lb = lbclient.LoadBalancer({"orders": [holes[0].address]}, **PLAIN)
    policy = lbclient.RetryPolicy(timeout=60)
    result, elapsed = _timed(
        mode, lb, "http://orders/", options={"retry": policy}, extensions={"lb_timeout": 0.3}
    )
    assert isinstance(result, DeadlineExceeded)
    assert elapsed < 0.3 + 1.5


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "1", True])
def test_a_bad_lb_timeout_is_refused(mode: Mode, value: object) -> None:
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]})
    with pytest.raises(ConfigurationError, match=r'extensions\["lb_timeout"\].*> 0'):
        send(mode, lb, "GET", "http://orders/", extensions={"lb_timeout": value})
    assert_settled(lb)


def test_a_per_try_timeout_moves_on_to_a_live_instance(mode: Mode, holes: list[BlackHole]) -> None:
    with HTTPBackend("live") as live:
        lb = lbclient.LoadBalancer(
            {"orders": [holes[0].address, holes[1].address, live.address]},
            scheduler="round_robin",
            **PLAIN,
        )
        policy = lbclient.RetryPolicy(per_try_timeout=0.2, timeout=10)
        for _ in range(3):  # whichever instance round robin starts on
            result, elapsed = _timed(mode, lb, "http://orders/", options={"retry": policy})
            assert isinstance(result, httpx.Response)
            assert result.status_code == 200
            assert elapsed < 2 * 0.2 + 2.0  # at most two cut tries, never httpx's 5 s
    rows = {row["address"]: row for row in instances(lb, "orders")}
    assert rows[holes[0].address]["failures"] >= 1
    assert rows[live.address]["failures"] == 0
    assert_settled(lb)


def test_no_pause_runs_past_the_deadline(mode: Mode) -> None:
    """A 503 whose retry would start after the deadline is returned at once."""
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        for backend in (a, b):
            backend.status = 503
            backend.headers = {"Retry-After": "3"}
        lb = lbclient.LoadBalancer({"orders": [a.address, b.address]}, **PLAIN)
        policy = lbclient.RetryPolicy(timeout=1.0)
        result, elapsed = _timed(mode, lb, "http://orders/", options={"retry": policy})
        assert result.status_code == 503
        assert a.requests + b.requests == 1
        assert elapsed < 1.0  # nobody waited for the deadline, let alone the 3 s
        assert_settled(lb)


# -- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_delays_the_next_attempt(mode: Mode, form: str) -> None:
    with HTTPBackend("busy") as busy, HTTPBackend("ok") as ok:
        busy.status = 503
        if form == "seconds":
            busy.headers = {"Retry-After": "1"}
        else:  # an HTTP date 2 s ahead (whole seconds: waits between 1 and 2 s)
            busy.headers = {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)}
        lb = lbclient.LoadBalancer(
            {"orders": [busy.address, ok.address]}, scheduler="round_robin", **PLAIN
        )
        started = time.monotonic()
        statuses = [send(mode, lb, "GET", "http://orders/").status_code for _ in range(2)]
        elapsed = time.monotonic() - started
    assert statuses == [200, 200]
    assert busy.requests == 1  # once per round-robin cycle, then retried on ``ok``
    assert elapsed >= 0.95  # a sleep is never shorter than asked
    assert_settled(lb)


def test_retry_after_beyond_the_maximum_returns_the_answer_at_once(mode: Mode) -> None:
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        for backend in (a, b):
            backend.status = 429
            backend.headers = {"Retry-After": "30"}
        lb = lbclient.LoadBalancer({"orders": [a.address, b.address]}, **PLAIN)
        policy = lbclient.RetryPolicy(statuses=frozenset({429, 503}), retry_after_max=5)
        result, elapsed = _timed(mode, lb, "http://orders/", options={"retry": policy})
    assert result.status_code == 429
    assert result.headers["Retry-After"] == "30"
    assert a.requests + b.requests == 1
    assert elapsed < 5
    assert_settled(lb)


def test_429_is_not_retried_by_default(mode: Mode) -> None:
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        a.status = b.status = 429
        lb = lbclient.LoadBalancer({"orders": [a.address, b.address]}, **PLAIN)
        assert send(mode, lb, "GET", "http://orders/").status_code == 429
    assert a.requests + b.requests == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),  # the past: no wait
        ("Sun, 06 Nov 1994 08:49:47 GMT", 10.0),
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("٣", None),  # Unicode digits are not HTTP delay-seconds
        ("Sunday, 06-Nov-94 08:49:37", None),  # no zone
        ("9" * 400, 1e9),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = email.utils.parsedate_to_datetime("Sun, 06 Nov 1994 08:49:37 GMT").timestamp()
    assert parse_retry_after(value, now) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40) | st.text(alphabet="0123456789", max_size=500))
def test_parse_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value)
    assert result is None or (math.isfinite(result) and result >= 0)


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["timeout", "per_try_timeout", "retry_after_max"])
@pytest.mark.parametrize("value", [0, -0.5, math.nan, math.inf, "1", True])
def test_retry_policy_timeouts_are_checked(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=rf"RetryPolicy\.{name} must be a finite"):
        lbclient.RetryPolicy(**{name: value})  # type: ignore[arg-type]


def test_retry_policy_timeouts_accept_none_and_numbers() -> None:
    policy = lbclient.RetryPolicy(timeout=2, per_try_timeout=0.5, retry_after_max=1.5)
    assert (policy.timeout, policy.per_try_timeout, policy.retry_after_max) == (2, 0.5, 1.5)
    assert lbclient.RetryPolicy().timeout is None
    with pytest.raises(ConfigurationError, match="retry_after_max"):
        lbclient.RetryPolicy(retry_after_max=None)  # type: ignore[arg-type]


def test_concurrent_calls_cut_by_deadlines_leave_nothing_in_flight(
    holes: list[BlackHole],
) -> None:
    """8 threads and 16 tasks, half the instances black holes: every call either answers or
    times out, and afterwards in-flight is exactly zero everywhere."""
    import asyncio
    import concurrent.futures

    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        lb = lbclient.LoadBalancer(
            {"orders": [holes[0].address, holes[1].address, a.address, b.address]}, **PLAIN
        )
        policy = lbclient.RetryPolicy(timeout=0.4, per_try_timeout=0.15)

        def thread_calls() -> list[object]:
            transport = lbclient.LoadBalancedTransport(lb, retry=policy)
            with httpx.Client(transport=transport) as client:
                return [_outcome(lambda: client.get("http://orders/")) for _ in range(4)]

        async def task_calls(client: httpx.AsyncClient) -> list[object]:
            results: list[object] = []
            for _ in range(4):
                try:
                    results.append((await client.get("http://orders/")).status_code)
                except httpx.TimeoutException:  # DeadlineExceeded, or per-try past the budget
                    results.append("timeout")
            return results

        async def tasks() -> list[list[object]]:
            transport = lbclient.AsyncLoadBalancedTransport(lb, retry=policy)
            async with httpx.AsyncClient(transport=transport) as client:
                return await asyncio.gather(*(task_calls(client) for _ in range(16)))

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(lambda _: thread_calls(), range(8)))
        gathered = asyncio.run(tasks())
    outcomes = [o for batch in threaded + gathered for o in batch]
    assert len(outcomes) == 8 * 4 + 16 * 4
    assert set(outcomes) <= {200, "timeout"}
    assert 200 in outcomes
    assert_settled(lb)


def _outcome(call: Any) -> object:
    try:
        return call().status_code
    except httpx.TimeoutException:
        return "timeout"


# -- the decision core, without I/O --------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    attempts=st.integers(1, 5),
    left=st.one_of(st.none(), st.floats(-1, 5)),
    retry_after=st.one_of(st.none(), st.floats(0, 20)),
    retry_after_max=st.floats(0.01, 15),
    allowed=st.booleans(),
    tokens=st.booleans(),
)
def test_a_pause_never_reaches_the_deadline_and_a_refusal_costs_no_token(
    attempts: int,
    left: float | None,
    retry_after: float | None,
    retry_after_max: float,
    allowed: bool,
    tokens: bool,
) -> None:
    from lbclient import PickContext, RetryBudget
    from lbclient._retry import RetryState

    policy = lbclient.RetryPolicy(attempts=attempts, retry_after_max=retry_after_max)
    budget = RetryBudget(ratio=0.0, min_per_second=0.0 if not tokens else 10.0)
    if not tokens:
        while budget.try_withdraw():
            pass
    deadline = None if left is None else time.monotonic() + left
    retry = RetryState(
        policy, budget, method="GET", replayable=True, context=PickContext(), deadline=deadline
    )
    retry.next_context()  # the first attempt
    before = budget.balance
    pause = retry.pause(allowed, retry_after)
    if pause is None:
        assert budget.balance >= before - 1e-6  # refused: nothing withdrawn
        return
    assert allowed
    assert tokens
    assert attempts > 1
    assert pause >= 0
    if retry_after is not None:
        assert pause == retry_after <= retry_after_max
    if deadline is not None:
        assert time.monotonic() + pause < deadline


@pytest.fixture
def trickle() -> Iterator[str]:
    """A server that answers one byte of its status line every 0.1 s (for about 4 s)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 40:
                    if stop.wait(0.1):
                        return
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()
    thread.join(5)


def test_async_cuts_an_attempt_even_when_the_server_trickles_bytes(trickle: str) -> None:
    lb = lbclient.LoadBalancer({"orders": [trickle]}, **PLAIN)
    policy = lbclient.RetryPolicy(timeout=0.5)
    result, elapsed = _timed("async", lb, "http://orders/", options={"retry": policy})
    assert isinstance(result, DeadlineExceeded)
    assert elapsed < 0.5 + 1.5  # the answer would take about 5 s
    assert_settled(lb)
