"""When to retry, decided without I/O; shared by the httpx transports and the gRPC channel.

``RetryPolicy`` is the configuration, ``RetryBudget`` caps retries per service so they cannot
multiply load during an outage (Finagle), and ``RetryState`` follows one logical request
across its attempts. The transports only sleep and resend; every decision is made here.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable

from tenacity import wait_exponential, wait_random
from tenacity.wait import wait_base

from lbclient._context import PickContext
from lbclient._outcome import Failure

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a failed attempt is retried on another instance.

    - A connection failure (the request never left) is retried for every method.
    - A failure after sending (reset, timeout) and a status in ``statuses`` are retried only
      for ``methods`` (idempotent ones by default; ``methods=None`` means all).
    - A request whose body cannot be replayed is never retried.
    - ``attempts`` counts the first try; ``avoid_previous`` picks another instance each time;
      ``wait`` is a tenacity wait strategy (default: 5 ms doubling to 250 ms, with jitter).
    - ``budget_ratio`` and ``budget_min_per_second`` size the per-service retry budget:
      retries may add at most 20% to the request rate, plus 10 retries per second.

    ``RetryPolicy(attempts=1)`` disables retries.
    """

    attempts: int = 3
    statuses: frozenset[int] = frozenset({502, 503, 504})
    methods: frozenset[str] | None = IDEMPOTENT_METHODS
    avoid_previous: bool = True
    wait: wait_base | Callable[..., float] = dataclasses.field(
        # wait_exponential_jitter(initial=...) is deprecated in tenacity 9.2 and its replacement
        # (multiplier=) is missing from the 8.x we support; this sum means the same everywhere.
        default_factory=lambda: wait_exponential(multiplier=0.005, max=0.25) + wait_random(0, 0.005)
    )
    budget_ratio: float = 0.2
    budget_min_per_second: float = 10.0

    def __post_init__(self) -> None:
        from lbclient._exceptions import ConfigurationError

        if self.attempts < 1:
            raise ConfigurationError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.budget_ratio < 0 or self.budget_min_per_second < 0:
            raise ConfigurationError("RetryPolicy budget values must be >= 0")
        object.__setattr__(self, "statuses", frozenset(self.statuses))
        if self.methods is not None:
            object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))

    def retries_method(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


NO_RETRY = RetryPolicy(attempts=1)


class RetryBudget:
    """A token bucket shared by all requests to one service (Finagle's RetryBudget).

    Each request deposits ``ratio`` tokens, each retry spends one, and ``min_per_second``
    tokens trickle in regardless so that a quiet service can still retry. The balance is
    capped at ten seconds' worth, so an idle period cannot bank an unbounded retry storm.

    Deposits happen on every request, withdrawals only on retries: a deposit only advances an
    ``itertools.count`` (atomic under CPython, no lock), and the deposits are folded into the
    balance, under the lock, when a retry or ``balance`` reads it. Since everything between
    two withdrawals is an addition, capping once when folding gives the same balance as
    capping after each deposit.
    """

    __slots__ = (
        "_balance",
        "_deposits",
        "_folded",
        "_lock",
        "_stamp",
        "cap",
        "exhausted",
        "min_per_second",
        "ratio",
    )

    def __init__(self, ratio: float = 0.2, min_per_second: float = 10.0) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = max(10.0 * min_per_second, 1.0)
        self._balance = self.cap
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self._deposits = itertools.count()
        self._folded = 0
        self.exhausted = 0

    def deposit(self) -> None:
        next(self._deposits)

    def _fold(self, now: float | None) -> None:
        """Add the deposits made since the last fold (and the trickle up to ``now``); locked."""
        mark = next(self._deposits)  # this read takes a number too: skip it next time
        balance = self._balance + (mark - self._folded) * self.ratio
        self._folded = mark + 1
        if now is not None:
            balance += (now - self._stamp) * self.min_per_second
            self._stamp = now
        self._balance = min(self.cap, balance)

    def try_withdraw(self) -> bool:
        with self._lock:
            self._fold(time.monotonic())
            if self._balance >= 1.0:
                self._balance -= 1.0
                return True
            self.exhausted += 1
            return False

    @property
    def balance(self) -> float:
        with self._lock:
            self._fold(None)
            return self._balance


class RetryState:
    """One logical request across its attempts: what to avoid next and whether to go again."""

    __slots__ = (
        "attempt",
        "budget",
        "context",
        "method",
        "policy",
        "refused",
        "replayable",
        "tried",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        budget: RetryBudget,
        *,
        method: str,
        replayable: bool,
        context: PickContext,
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.method = method
        self.replayable = replayable
        self.context = context
        self.attempt = 0
        self.tried: list[str] = []
        self.refused = False
        """True once the budget refused a retry the policy allowed (for ``on_retry_refused``)."""
        budget.deposit()

    def next_context(self) -> PickContext:
        """The pick context of the next attempt (avoiding instances already tried)."""
        self.attempt += 1
        if self.policy.avoid_previous and self.tried:
            return PickContext(
                key=self.context.key,
                source=self.context.source,
                zone=self.context.zone,
                attributes=self.context.attributes,
                exclude=self.context.exclude | frozenset(self.tried),
            )
        return self.context

    def record(self, instance_id: str) -> None:
        self.tried.append(instance_id)

    def _may_go_again(self) -> bool:
        if not (self.replayable and self.attempt < self.policy.attempts):
            return False
        if self.budget.try_withdraw():
            return True
        self.refused = True
        return False

    def retry_failure(self, failure: Failure, *, sent: bool) -> bool:
        """After an exception: retry? ``sent`` False means the request never left."""
        if sent and not self.policy.retries_method(self.method):
            return False
        return self._may_go_again()

    def retry_status(self, status: int) -> bool:
        """After a response: retry it on another instance?"""
        if status not in self.policy.statuses or not self.policy.retries_method(self.method):
            return False
        return self._may_go_again()

    def describe(self) -> str:
        return f"{self.attempt} attempt(s) on {', '.join(self.tried) or 'no instance'}"
