"""TimedFilter: a filter with background timers that all stop when the filter closes.

The timer holds filters only weakly: a balancer that is dropped without ``close()`` is
garbage-collected like any object, and its filters then release the shared timer thread
instead of keeping it (and themselves) alive forever.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from lbclient.filters._base import Filter, ServiceView
from lbclient.health import _timer
from lbclient.health._timer import Call


class TimedFilter(Filter):
    """Holds the shared timer from ``bind`` to ``close``; callbacks never run after ``close``."""

    _timer: _timer.Timer | None = None
    _closed = False

    def bind(self, state: ServiceView) -> None:
        super().bind(state)
        self._timer = _timer.acquire()
        self._release = weakref.finalize(self, _timer.release)

    def later(self, delay: float, method: Callable[..., object], *args: Any) -> Call | None:
        """Run ``method(*args)`` (a method of this filter) on the timer thread after ``delay``
        seconds, unless the filter is closed or gone by then."""
        timer = self._timer
        if timer is None or self._closed:
            return None
        owner = weakref.ref(self)
        ref = weakref.WeakMethod(method)
        del method

        def fire() -> None:
            filt, bound = owner(), ref()
            if filt is not None and bound is not None and not filt._closed:
                bound(*args)

        return timer.call_later(delay, fire)

    def refresh(self, *, off_request_path: bool = False) -> None:
        """Ask the service to recompute its usable list (our verdict changed).

        ``off_request_path``: the verdict came from a request's outcome, so the scheduler is
        rebuilt on the timer thread and that request does not wait for it.
        """
        if not self._closed:
            self.state.invalidate(self._on_timer if off_request_path else None)

    def _on_timer(self, build: Callable[[], None]) -> None:
        timer = self._timer
        if timer is None:  # closing: build here rather than not at all
            build()
        else:
            timer.call_later(0.0, build)

    def close(self) -> None:
        if self._timer is None or self._closed:
            return
        self._closed = True
        self._timer = None
        self._release()
