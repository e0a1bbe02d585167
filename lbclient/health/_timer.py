"""One shared timer thread for every filter's periodic work (probes, sweeps, ramps, readmission).

A timer per filter per service would cost a thread each; one thread with a heap of deadlines
costs one for the whole process. It exists only while something holds it: ``acquire()``
starts it, the last ``release()`` stops and joins it, so no thread survives the last
``LoadBalancer.close()``. Callbacks run on the timer thread and must be short and never do
I/O (probes are handed to a pool); an exception in one is logged and does not stop the rest.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("lbclient.health")

THREAD_NAME = "lbclient-timer"


class Call:
    """A scheduled callback; ``cancel()`` makes it a no-op (it stays in the heap until due)."""

    __slots__ = ("cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], object]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timer:
    """Run callbacks at monotonic deadlines on one daemon thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Call]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[[], object]) -> Call:
        """Run ``fn`` after ``delay`` seconds (0 runs it as soon as the thread is free)."""
        call = Call(time.monotonic() + max(0.0, delay), fn)
        with self._cond:
            heapq.heappush(self._heap, (call.when, next(self._seq), call))
            self._cond.notify()
        return call

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                call = heapq.heappop(self._heap)[2]
            if call.cancelled:
                continue
            try:
                call.fn()
            except Exception:
                log.exception("lbclient timer callback %r failed", call.fn)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)


_lock = threading.Lock()
_shared: Timer | None = None
_holders = 0


def acquire() -> Timer:
    """The process-wide timer, started on first use; pair every call with ``release()``."""
    global _shared, _holders
    with _lock:
        if _shared is None:
            _shared = Timer()
        _holders += 1
        return _shared


def release() -> None:
    """Drop one hold; the last one stops and joins the thread."""
    global _shared, _holders
    with _lock:
        _holders -= 1
        timer = _shared if _holders == 0 else None
        if timer is not None:
            _shared = None
    if timer is not None:
        timer.stop()
