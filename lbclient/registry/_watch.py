"""Background watching shared by every registry: keep the last good list, back off, recover.

The decisions (how long to wait, when to log, what to publish) live in ``WatchPolicy``, which
does no I/O. ``ThreadWatch`` and ``TaskWatch`` are the two small drivers around it, for
blocking clients and for asyncio clients. A registry supplies one ``poll(cursor)`` function:
it blocks until something may have changed (a Consul blocking query, an etcd watch, a
Kubernetes watch event) and returns the full list plus the cursor to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from lbclient._exceptions import ConfigurationError
from lbclient._instance import ServiceInstance
from lbclient.registry._base import SnapshotSink
from lbclient.registry._loop import SharedLoop

log = logging.getLogger("lbclient.registry")

C = TypeVar("C")
Poll = Callable[[C | None], tuple[Sequence[ServiceInstance] | None, C | None]]
"""``poll(cursor) -> (instances or None when unchanged, next cursor)``."""
AsyncPoll = Callable[[C | None], Awaitable[tuple[Sequence[ServiceInstance] | None, C | None]]]


class WatchPolicy(Generic[C]):
    """The no-I/O heart of a watch: backoff with jitter, log once per state change.

    After an error the cursor is dropped (the next poll is a fresh read) and the wait grows
    exponentially from ``min_backoff`` to ``max_backoff`` with full jitter. A
    ConfigurationError (bad token, bad query) is not retried quickly: it is logged as an
    error and retried at ``max_backoff``, so a fixed configuration recovers on its own.

    Nothing a registry answers can end the watch: an answer the sink cannot take (publish
    raises) is reported to the sink as an error and the watch goes on from the answer's
    cursor, so the next change is the next chance. The log gets one line per change of
    state (working, failing with a given error, working again), never one per retry.
    """

    def __init__(
        self,
        name: str,
        sink: SnapshotSink,
        *,
        min_backoff: float = 0.1,
        max_backoff: float = 30.0,
        min_interval: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.sink = sink
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.min_interval = min_interval
        self.cursor: C | None = None
        self.errors = 0
        self._rng = rng or random.Random()
        self._last_poll = 0.0
        self._logged: str | None = None
        """The error last logged (None: working), so each state change logs exactly once."""

    def succeeded(self, instances: Sequence[ServiceInstance] | None, cursor: C | None) -> None:
        """The registry answered; hand the list to the sink (never raises)."""
        if self.errors:
            log.info(
                "%s: registry reachable again after %d failed attempt(s)", self.name, self.errors
            )
            self.errors = 0
            self._logged = None
        self.cursor = cursor
        if instances is None:
            return
        try:
            self.sink.publish(instances)
        except Exception as exc:  # a sink that cannot take the answer must not end the watch
            self._report(exc)
            if self._logged != (text := _describe(exc)):
                self._logged = text
                log.error(
                    "%s: the answer could not be applied, keeping the last good list: %s",
                    self.name,
                    text,
                )
                log.debug("%s: why the answer could not be applied", self.name, exc_info=exc)
        else:
            self._logged = None

    def failed(self, error: BaseException) -> float:
        """Record a failed poll; return how long to wait before the next one."""
        self.errors += 1
        self.cursor = None
        self._report(error)
        text = _describe(error)
        first = self._logged != text
        self._logged = text
        if isinstance(error, ConfigurationError):
            if first:
                log.error("%s: %s (retrying every %.0fs)", self.name, error, self.max_backoff)
            return self.max_backoff
        if first:
            log.warning(
                "%s: registry unavailable, keeping the last good list: %s", self.name, error
            )
        ceiling = min(self.max_backoff, self.min_backoff * 2 ** min(self.errors - 1, 30))
        return self._rng.uniform(self.min_backoff, ceiling)

    def _report(self, error: BaseException) -> None:
        try:
            self.sink.fail(error)
        except Exception:
            log.exception("%s: the sink failed to record a registry error", self.name)

    def pace(self) -> float:
        """Seconds to wait before the next poll so the loop never spins (rate limit)."""
        now = time.monotonic()
        wait = self._last_poll + self.min_interval - now
        self._last_poll = max(now, now + wait)
        return max(0.0, wait)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class ThreadWatch(Generic[C]):
    """Drive ``poll`` in a daemon thread until ``close``."""

    def __init__(
        self, policy: WatchPolicy[C], poll: Poll[C], *, on_close: Callable[[], Any] | None = None
    ) -> None:
        self.policy = policy
        self._poll = poll
        self._on_close = on_close
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lbclient-watch-{policy.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._stop.wait(self.policy.pace()):
                return
            try:
                instances, cursor = self._poll(self.policy.cursor)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._stop.wait(self.policy.failed(exc))
                continue
            if not self._stop.is_set():
                self.policy.succeeded(instances, cursor)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop; a poll blocked in I/O is abandoned (the thread is a daemon) after ``timeout``."""
        self._stop.set()
        if self._on_close is not None:
            self._on_close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


class TaskWatch(Generic[C]):
    """Drive an async ``poll`` as a task of the running event loop until ``close``.

    ``cleanup`` (e.g. closing the poll's HTTP session) is awaited when the task ends.
    """

    def __init__(
        self,
        policy: WatchPolicy[C],
        poll: AsyncPoll[C],
        *,
        cleanup: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.policy = policy
        self._poll = poll
        self._cleanup = cleanup
        self._launch()

    def _launch(self) -> None:
        """Start the task on the running loop (LoopWatch: on the shared loop's thread)."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"lbclient-watch-{self.policy.name}"
        )

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            if self._cleanup is not None:
                await self._cleanup()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.policy.pace())
            try:
                instances, cursor = await self._poll(self.policy.cursor)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await asyncio.sleep(self.policy.failed(exc))
                continue
            self.policy.succeeded(instances, cursor)

    def close(self) -> None:
        """Cancel the task (callable from any thread)."""
        loop = self._task.get_loop()
        if loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._task.cancel()
        else:
            loop.call_soon_threadsafe(self._task.cancel)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class LoopWatch(TaskWatch[C]):
    """A TaskWatch on the process's shared watch loop, for callers outside asyncio.

    However many services are watched this way, they share one thread (``SharedLoop``).
    ``close`` returns once the task has ended (its cleanup done), unless called on the loop
    itself (e.g. a balancer collected there), which must not wait for itself.
    """

    def _launch(self) -> None:
        self._closed = False
        self._closing = threading.Lock()
        self._ended = threading.Event()
        self._shared = SharedLoop.acquire()
        self._shared.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self._closed:  # closed before the loop got to it
            self._ended.set()
            return
        self._task = self._shared.loop.create_task(
            self._run(), name=f"lbclient-watch-{self.policy.name}"
        )
        self._task.add_done_callback(lambda _: self._ended.set())

    def _cancel(self) -> None:
        task = getattr(self, "_task", None)
        if task is not None:
            task.cancel()

    @property
    def stopped(self) -> bool:
        return self._ended.is_set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The shared loop the watch runs on."""
        return self._shared.loop

    def close(self, timeout: float = 5.0) -> None:
        """Stop the task and wait (up to ``timeout``) until it no longer publishes."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        shared = self._shared
        shared.loop.call_soon_threadsafe(self._cancel)
        if not shared.on_loop:
            self._ended.wait(timeout)
        shared.release(timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


def async_watch(
    policy: WatchPolicy[C],
    poll: AsyncPoll[C],
    *,
    cleanup: Callable[[], Awaitable[Any]] | None = None,
) -> TaskWatch[C]:
    """Drive an async ``poll`` where the caller is: a task of its running event loop, or,
    outside asyncio, a task of the shared watch loop (one thread for all such watches)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return LoopWatch(policy, poll, cleanup=cleanup)
    return TaskWatch(policy, poll, cleanup=cleanup)
