"""The two loops that run a ``Race``: over futures (threads, grpcio) and over asyncio tasks.

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
from lbclient._handle import PickHandle
from lbclient._hedge import Race
from lbclient._retry import RetryState

T = TypeVar("T")


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
