"""``Race``, one round of a hedged request, and the two loops that run it: over futures
(threads, grpcio) and over asyncio tasks.

Each loop starts the first attempt, waits for an answer until the next hedge is due, asks
the race for a hedge, and settles the round: the first attempt that ends without raising
wins, and every other attempt is cancelled and released as a cancellation. What an attempt
is (an httpx send, a grpcio call) is the caller's ``launch``; every decision is the race's.
The httpx transports and the gRPC channels share these loops, sync and async alike.

An attempt that raises has failed (its own code reported the failure); when every attempt
of the round has failed, the caller gets the last failure to hand to its retry policy.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from lbclient._balancer import ServiceState
from lbclient._context import PickContext
from lbclient._exceptions import LBError
from lbclient._handle import PickHandle
from lbclient._hedge import Hedging
from lbclient._retry import RetryState

T = TypeVar("T")


class Race:
    """One round of attempts of one request, racing for the answer.

    The driver launches the first attempt, then waits for an answer at most ``wait()``
    seconds; when that passes without one it asks ``hedge()`` whether a backup may leave.
    ``won()`` settles the round: the first good answer wins, later ones are discarded.
    """

    __slots__ = ("_at", "decided", "delay", "hedges", "hedging", "started")

    def __init__(self, hedging: Hedging) -> None:
        self.hedging = hedging
        self.started = time.monotonic()
        self.delay = hedging.delay()
        self.hedges = 0
        self.decided = False
        """True once an answer won: the attempts still running lost and are cancelled, and
        an error they end with is not held against their instance."""
        self._at = None if self.delay is None else self.started + self.delay

    @property
    def hedged(self) -> bool:
        """False when no hedge can ever leave in this round (no delay known yet)."""
        return self._at is not None

    def wait(self) -> float | None:
        """Seconds until the next hedge is due (0 if overdue), or None when none will leave."""
        if self._at is None:
            return None
        return max(0.0, self._at - time.monotonic())

    def hedge(self, state: ServiceState, retry: RetryState) -> PickHandle | None:
        """The next hedge is due: the handle of the instance it goes to, or None when it may
        not leave (past the deadline, no instance this request has not tried, or a budget
        refuses). After the last hedge, or a hedge that could not leave, none is due."""
        hedging = self.hedging
        self.hedges += 1
        delay = self.delay
        if delay is None or self.hedges >= hedging.policy.max_hedges:
            self._at = None
        else:
            self._at = self.started + delay * (self.hedges + 1)
        tried = frozenset(retry.tried)
        untried = any(e.id not in tried for e in state.usable)  # (hedges are rare: O(n) is fine)
        if not untried or (retry.deadline is not None and retry.expired()):
            self._at = None
            return None
        if not (hedging.budget.try_withdraw() and hedging.retry_budget.try_withdraw()):
            hedging.count(sent=False)
            self._at = None
            if state.listeners:
                state.emit("on_hedge_refused", retry.attempt)
            return None
        handle = _pick_untried(state, retry, tried)
        if handle is None:
            self._at = None
            return None
        hedging.count(sent=True)
        if state.listeners:
            state.emit("on_hedge", retry.attempt, handle.instance)
        return handle

    def won(self) -> bool:
        """An attempt answered: True if it is the first (it wins), False if another won."""
        if self.decided:
            return False
        self.decided = True
        return True

    def record(self, started: float, now: float | None = None) -> None:
        """One attempt's sample: how long it took to answer, or had run when it was
        cancelled (a lower bound that keeps the tail in the histogram). Only a percentile
        delay reads the histogram: a fixed delay records nothing."""
        hedging = self.hedging
        if hedging.policy.quantile is not None:
            hedging.latencies.record((time.monotonic() if now is None else now) - started)


def _pick_untried(
    state: ServiceState, retry: RetryState, tried: frozenset[str]
) -> PickHandle | None:
    """An instance this request has not tried (then recorded as tried), or None when the
    scheduler gives back one it has (with the usable list changed meanwhile) or none."""
    base = retry.context
    context = PickContext(
        key=base.key,
        source=base.source,
        zone=base.zone,
        attributes=base.attributes,
        exclude=base.exclude | tried,
    )
    try:
        handle = state.pick(context, retry.attempt, retry.ticket)
    except LBError:
        return None
    if handle.instance.id in tried:
        handle.cancel()
        return None
    retry.record(handle.instance.id)
    return handle


class Attempt(Protocol):
    """What both ``concurrent.futures.Future`` and grpcio's call futures offer."""

    def add_done_callback(self, fn: Callable[[Any], object]) -> Any: ...
    def cancel(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def exception(self) -> BaseException | None: ...
    def result(self) -> Any: ...


Discard = Callable[[PickHandle, Any], None]
"""Close a losing attempt's answer (an httpx response); its handle is already released."""


def failure_of(attempt: Attempt | None) -> BaseException:
    """The exception a failed attempt ended with (grpcio's future is its own RpcError)."""
    error = attempt.exception() if attempt is not None else None
    assert error is not None, "a round ends with a winner or a failed attempt"
    return error


def race_futures(
    race: Race,
    state: ServiceState,
    retry: RetryState,
    first: tuple[PickHandle, Attempt],
    launch: Callable[[PickHandle], Attempt | None],
    discard: Discard | None = None,
) -> tuple[Attempt | None, Attempt | None]:
    """Run one round over futures: ``(winner, None)``, or ``(None, last failed attempt)``.

    ``launch`` starts a hedge on the picked instance (None: it could not, its handle is
    released). A losing future is cancelled; one that is already running (a blocking send
    on a thread cannot be interrupted) is released when it ends, so in-flight counts stay
    exact while it runs.
    """
    ended: queue.SimpleQueue[Attempt] = queue.SimpleQueue()
    attempts: dict[Attempt, PickHandle] = {}

    def track(handle: PickHandle, future: Attempt) -> None:
        attempts[future] = handle
        future.add_done_callback(ended.put)

    track(*first)
    failure: Attempt | None = None
    try:
        while attempts:
            try:
                future = ended.get(timeout=race.wait())
            except queue.Empty:
                hedge = race.hedge(state, retry)
                if hedge is not None:
                    started = launch(hedge)
                    if started is not None:
                        track(hedge, started)
                continue
            handle = attempts.pop(future)
            if future.cancelled() or future.exception() is not None:
                failure = future
                continue
            race.won()  # the first answer: this loop returns at once, nothing else won
            race.record(handle.started)
            return future, None
        return None, failure
    finally:
        race.decided = True
        for future, handle in attempts.items():
            future.cancel()
            future.add_done_callback(functools.partial(_lost, race, handle, discard))


def _lost(race: Race, handle: PickHandle, discard: Discard | None, future: Attempt) -> None:
    """A losing attempt ended: its slot goes back as a cancellation (a no-op when it already
    reported), its answer is discarded, and how long it ran joins the latencies."""
    handle.cancel()
    if future.cancelled() or future.exception() is None:
        race.record(handle.started)
    if not future.cancelled() and future.exception() is None and discard is not None:
        discard(handle, future.result())


async def race_tasks(
    race: Race,
    state: ServiceState,
    retry: RetryState,
    first: PickHandle,
    attempt: Callable[[PickHandle], Coroutine[Any, Any, T]],
    discard: Callable[[PickHandle, T], Awaitable[None]] | None = None,
) -> tuple[T, None] | tuple[None, BaseException]:
    """Run one round over asyncio tasks: ``(answer, None)`` or ``(None, last failure)``.

    ``attempt(handle)`` is the coroutine of one attempt on the picked instance; it reports
    its own outcome. Losing tasks are cancelled and awaited before this returns, so their
    slots are back (as cancellations) when the caller gets the answer.
    """
    loop = asyncio.get_running_loop()
    tasks: dict[asyncio.Task[T], PickHandle] = {}

    def launch(handle: PickHandle) -> None:
        task = loop.create_task(attempt(handle))
        # A task cancelled before its first step never runs the attempt's own release.
        task.add_done_callback(lambda done: handle.cancel() if done.cancelled() else None)
        tasks[task] = handle

    launch(first)
    failure: BaseException | None = None
    try:
        while tasks:
            done, _ = await asyncio.wait(
                tasks, timeout=race.wait(), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                hedge = race.hedge(state, retry)
                if hedge is not None:
                    launch(hedge)
                continue
            answer: tuple[T, None] | None = None
            for task in done:
                handle = tasks.pop(task)
                error = task.exception()
                if error is not None:
                    failure = error
                elif race.won():
                    race.record(handle.started)
                    answer = (task.result(), None)
                else:  # answered in the same instant as the winner
                    handle.cancel()
                    if discard is not None:
                        await discard(handle, task.result())
            if answer is not None:
                return answer
        assert failure is not None
        return None, failure
    finally:
        race.decided = True
        if tasks:
            await _cancel(race, tasks, discard)


async def _cancel(
    race: Race,
    tasks: dict[asyncio.Task[T], PickHandle],
    discard: Callable[[PickHandle, T], Awaitable[None]] | None,
) -> None:
    """Cancel the attempts that lost (or all, when the caller gave up) and wait for them;
    the time each ran joins the latencies (a lower bound of its latency)."""
    for task in tasks:
        task.cancel()
    now = time.monotonic()
    await asyncio.wait(tasks)
    for task, handle in tasks.items():
        if task.cancelled():
            race.record(handle.started, now)
        elif task.exception() is None:
            handle.cancel()
            if discard is not None:
                await discard(handle, task.result())


def on_asyncio() -> bool:
    """Hedges run in asyncio tasks: under another event loop (trio) requests go unhedged."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
