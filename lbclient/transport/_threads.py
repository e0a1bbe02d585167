"""AttemptThreads: the bounded pool a sync transport runs hedged attempts on."""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from lbclient import _validate as check

T = TypeVar("T")

DEFAULT_HEDGE_THREADS = 32
MAX_HEDGE_THREADS = 1024


class AttemptThreads:
    """At most ``size`` attempts at once, each on its own thread, started when first needed.

    A blocking call cannot wait for two answers at once, so a hedged request runs its
    attempts here while the caller's thread waits for the first answer. When every thread
    is busy, ``submit`` says so at once (None) and the request goes unhedged in the caller's
    thread: the pool never queues, so a burst of slow losers cannot delay new requests.
    """

    def __init__(self, size: int = DEFAULT_HEDGE_THREADS) -> None:
        self.size = check.integer("hedge_threads", size, minimum=1, maximum=MAX_HEDGE_THREADS)
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T] | None:
        """Run ``fn(*args)`` on a free thread, or None when none is free or the pool closed."""
        if self._closed or not self._slots.acquire(blocking=False):
            return None
        try:
            # In the caller's context (tracing spans, contextvars), as an unhedged attempt is.
            future = self._start().submit(contextvars.copy_context().run, fn, *args)
        except RuntimeError:  # closed meanwhile
            self._slots.release()
            return None
        future.add_done_callback(self._release)
        return future

    def _release(self, future: concurrent.futures.Future[Any]) -> None:
        self._slots.release()

    def _start(self) -> concurrent.futures.ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError("closed")
                executor = self._executor
                if executor is None:
                    executor = self._executor = concurrent.futures.ThreadPoolExecutor(
                        self.size, thread_name_prefix="lbclient-hedge"
                    )
        return executor

    def close(self) -> None:
        """Stop taking attempts; those running finish on their own (their transport is
        closing, so they end soon), those not started are cancelled."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
