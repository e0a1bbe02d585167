"""A service-level circuit breaker (resilience4j's state machine), decided without I/O.

``CircuitBreaker`` is the configuration; ``BreakerState`` is one service's breaker:

- CLOSED: calls pass; the outcomes of the last ``window`` calls are kept. Once at least
  ``minimum_calls`` are known and the share that failed reaches ``failure_rate``, it opens.
- OPEN: calls fail at once with ``CircuitOpen`` for ``open_for`` seconds; the first call
  after that turns it HALF_OPEN (resilience4j without automatic transition: no timer thread).
- HALF_OPEN: ``half_open_calls`` trial calls pass, the others are refused; when every trial
  call has ended, it closes if their failure share is below ``failure_rate``, else reopens.

A call counts once, with its final outcome (after retries), not once per attempt: instance
failures are outlier ejection's business, the breaker answers "is the service as a whole
failing this caller". Calls refused locally (no instance, a full limit, cancelled) are not
outcomes: a half-open permit they held goes back, so HALF_OPEN can never stick
(resilience4j#935). Outcomes of calls admitted before the last transition are ignored.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable

from lbclient import _validate as check
from lbclient._exceptions import CircuitOpen

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

MAX_WINDOW = 1_000_000
"""The most calls a window may remember (its memory is one bool per call)."""


@dataclasses.dataclass(frozen=True)
class CircuitBreaker:
    """When to stop calling a failing service for a while (resilience4j's defaults).

    >>> import lbclient
    >>> lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:8001"]},
    ...     circuit_breaker=lbclient.CircuitBreaker(failure_rate=0.5, minimum_calls=20))
    >>> lb.close()

    ``failure_rate`` is a share in (0, 1]; ``window`` the number of most recent calls it is
    measured over (count based); ``minimum_calls`` how many must be known before it may open;
    ``open_for`` seconds refused before trial calls; ``half_open_calls`` trial calls.
    """

    failure_rate: float = 0.5
    minimum_calls: int = 100
    window: int = 100
    open_for: float = 60.0
    half_open_calls: int = 10

    def __post_init__(self) -> None:
        check.number("CircuitBreaker.failure_rate", self.failure_rate, above=0.0, maximum=1.0)
        for name in ("minimum_calls", "window", "half_open_calls"):
            check.integer(
                f"CircuitBreaker.{name}", getattr(self, name), minimum=1, maximum=MAX_WINDOW
            )
        if self.minimum_calls > self.window:
            raise check.invalid(
                "CircuitBreaker.minimum_calls",
                self.minimum_calls,
                f"at most window={self.window} (else the breaker could never open)",
            )
        check.seconds("CircuitBreaker.open_for", self.open_for)


class BreakerState:
    """One service's breaker. ``acquire`` before a call, ``record``/``release`` after it.

    ``acquire`` returns the generation the call was admitted in; the call hands it back.
    """

    __slots__ = (
        "_calls",
        "_failures",
        "_generation",
        "_lock",
        "_on_state",
        "_opened_at",
        "_trials_left",
        "_trials_out",
        "config",
        "opened",
        "refused",
        "service",
        "state",
    )

    def __init__(
        self,
        config: CircuitBreaker,
        service: str,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._on_state = on_state
        """Told of each new state, outside the lock (``on_circuit_state``)."""
        self.service = service
        self.state = CLOSED
        self._lock = threading.Lock()
        self._calls: collections.deque[bool] = collections.deque(maxlen=config.window)
        self._failures = 0
        self._generation = 0
        self._opened_at = 0.0
        self._trials_left = 0
        self._trials_out = 0
        self.opened = 0
        """How many times it opened."""
        self.refused = 0
        """Calls refused with CircuitOpen."""

    def acquire(self) -> int:
        """Admit a call (its generation) or raise ``CircuitOpen``."""
        with self._lock:
            if self.state is CLOSED:
                return self._generation
            moved = self.state is OPEN
            if moved:
                wait = self._opened_at + self.config.open_for - time.monotonic()
                if wait > 0:
                    self.refused += 1
                    raise self._refusal(wait)
                self._transition(HALF_OPEN)
            admitted = self._trials_left > 0
            if admitted:
                self._trials_left -= 1
                self._trials_out += 1
                generation = self._generation
            else:
                self.refused += 1
        if moved:
            self._told(HALF_OPEN)
        if admitted:
            return generation
        raise self._refusal(None)

    def record(self, generation: int, failed: bool) -> None:
        """The final outcome of a call admitted in ``generation``."""
        with self._lock:
            before = self.state
            self._record(generation, failed)
            after = self.state
        if after is not before:
            self._told(after)

    def _record(self, generation: int, failed: bool) -> None:
        """``record`` under the lock."""
        if generation != self._generation:
            return  # admitted before a transition: says nothing about the current state
        if self.state is HALF_OPEN:
            self._trials_out -= 1
        calls = self._calls
        if len(calls) == calls.maxlen and calls[0]:
            self._failures -= 1
        calls.append(failed)
        self._failures += failed
        if self.state is CLOSED:
            if len(calls) >= self.config.minimum_calls and self._rate() >= 1:
                self._transition(OPEN)
        elif self.state is HALF_OPEN and self._trials_left == 0 and self._trials_out == 0:
            self._transition(OPEN if self._rate() >= 1 else CLOSED)

    def release(self, generation: int) -> None:
        """A call admitted in ``generation`` ended without an outcome: give its permit back."""
        with self._lock:
            if generation == self._generation and self.state is HALF_OPEN:
                self._trials_out -= 1
                self._trials_left += 1

    def _told(self, state: str) -> None:
        if self._on_state is not None:
            self._on_state(state)

    def _rate(self) -> float:
        """The failure share over the window, relative to the threshold (>= 1: trip)."""
        return self._failures / len(self._calls) / self.config.failure_rate

    def _transition(self, state: str) -> None:
        self.state = state
        self._generation += 1
        self._calls.clear()
        self._failures = 0
        self._trials_out = 0
        self._trials_left = self.config.half_open_calls if state is HALF_OPEN else 0
        if state is OPEN:
            self._opened_at = time.monotonic()
            self.opened += 1

    def _refusal(self, wait: float | None) -> CircuitOpen:
        if wait is None:
            why = (
                f"it is half-open and its {self.config.half_open_calls} trial call(s) are "
                "still running; it lets more through once they end"
            )
            wait = 0.0
        else:
            why = f"it lets a trial call through in {wait:.1f} s"
        return CircuitOpen(
            f"the circuit breaker of {self.service!r} is open after too many failed calls "
            f"(failure rate >= {self.config.failure_rate:.0%}); the call was not sent: {why}",
            retry_in=wait,
            service=self.service,
        )

    def stats(self) -> dict[str, object]:
        with self._lock:
            calls = len(self._calls)
            return {
                "state": self.state,
                "failure_rate": round(self._failures / calls, 3) if calls else None,
                "calls": calls,
                "opened": self.opened,
                "refused": self.refused,
            }
