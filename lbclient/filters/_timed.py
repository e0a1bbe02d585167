"""TimedFilter: a filter with background timers that all stop when the filter closes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from lbclient.filters._base import Filter
from lbclient.health import _timer
from lbclient.health._timer import Call

if TYPE_CHECKING:
    from lbclient._balancer import ServiceState


class TimedFilter(Filter):
    """Holds the shared timer from ``bind`` to ``close``; callbacks never run after ``close``."""

    _timer: _timer.Timer | None = None
    _closed = False

    def bind(self, state: ServiceState) -> None:
        super().bind(state)
        self._guard = threading.Lock()
        self._timer = _timer.acquire()

    def later(self, delay: float, fn: Callable[[], object]) -> Call | None:
        """Run ``fn`` on the timer thread after ``delay`` seconds, unless closed by then."""
        timer = self._timer
        if timer is None or self._closed:
            return None

        def guarded() -> None:
            if not self._closed:
                fn()

        return timer.call_later(delay, guarded)

    def refresh(self) -> None:
        """Ask the service to recompute its usable list (our verdict changed)."""
        if not self._closed:
            self.state.invalidate()

    def close(self) -> None:
        if self._timer is None or self._closed:
            return
        self._closed = True
        self._timer = None
        _timer.release()
