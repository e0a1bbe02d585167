"""When to retry, decided without I/O; shared by the httpx transports and the gRPC channel.

``RetryPolicy`` is the configuration, ``RetryBudget`` caps retries per service so they cannot
multiply load during an outage (Finagle), and ``RetryState`` follows one logical request
across its attempts. The transports only sleep and resend; every decision is made here.
"""

from __future__ import annotations

import dataclasses
import email.utils
import itertools
import math
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from tenacity import RetryCallState, wait_exponential, wait_random
from tenacity.wait import wait_base

from lbclient._context import PickContext
from lbclient._outcome import Failure

if TYPE_CHECKING:
    from lbclient._limits import Ticket

MAX_ATTEMPTS = 100
"""More attempts than this is a loop, not a retry policy (gRPC itself caps at 5)."""

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def positive_seconds(value: object) -> bool:
    """True for a finite number > 0 (not a bool): a valid timeout."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


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
    - ``timeout`` (seconds, default none) bounds the whole call, attempts and pauses
      included (Envoy's route timeout); ``per_try_timeout`` bounds one attempt (Envoy's).
      Both are enforced by the httpx transports; gRPC calls use their own ``timeout=``.
    - A retried answer's ``Retry-After`` (seconds or an HTTP date) replaces the backoff
      before the next attempt; above ``retry_after_max`` seconds (or past ``timeout``) the
      answer is returned at once instead.

    ``RetryPolicy(attempts=1)`` disables retries.
    """

    attempts: int = 3
    statuses: Collection[int] = frozenset({502, 503, 504})
    """Stored as a frozenset."""
    methods: Collection[str] | None = IDEMPOTENT_METHODS
    """Stored as a frozenset of upper-case names; a bare string is refused."""
    avoid_previous: bool = True
    wait: wait_base | Callable[..., float] = dataclasses.field(
        # wait_exponential_jitter(initial=...) is deprecated in tenacity 9.2 and its replacement
        # (multiplier=) is missing from the 8.x we support; this sum means the same everywhere.
        default_factory=lambda: wait_exponential(multiplier=0.005, max=0.25) + wait_random(0, 0.005)
    )
    budget_ratio: float = 0.2
    budget_min_per_second: float = 10.0
    timeout: float | None = None
    per_try_timeout: float | None = None
    retry_after_max: float = 10.0

    def __post_init__(self) -> None:
        from lbclient import _validate as check
        from lbclient._exceptions import ConfigurationError

        for name in ("timeout", "per_try_timeout", "retry_after_max"):
            value = getattr(self, name)
            if value is None and name != "retry_after_max":
                continue
            if not positive_seconds(value):
                raise ConfigurationError(
                    f"RetryPolicy.{name} must be a finite number of seconds > 0"
                    f"{' or None' if name != 'retry_after_max' else ''}, got {value!r}"
                )
            check.seconds(f"RetryPolicy.{name}", value)  # a millisecond to a year

        check.integer("RetryPolicy.attempts", self.attempts, minimum=1, maximum=MAX_ATTEMPTS)
        statuses = check.statuses(
            "RetryPolicy.statuses", self.statuses, expected="a collection of HTTP statuses"
        )
        object.__setattr__(self, "statuses", statuses)
        if self.methods is not None:
            methods = check.strings("RetryPolicy.methods", self.methods, example="{'GET', 'PUT'}")
            object.__setattr__(self, "methods", frozenset(m.upper() for m in methods))
        check.flag("RetryPolicy.avoid_previous", self.avoid_previous)
        if not callable(self.wait):
            raise check.invalid(
                "RetryPolicy.wait", self.wait, "a tenacity wait strategy, e.g. wait_fixed(0.1)"
            )
        check.number("RetryPolicy.budget_ratio", self.budget_ratio, minimum=0.0, maximum=100.0)
        check.number(
            "RetryPolicy.budget_min_per_second",
            self.budget_min_per_second,
            minimum=0.0,
            maximum=1e6,
        )

    def retries_method(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


NO_RETRY = RetryPolicy(attempts=1)


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """The policy's tenacity wait before attempt ``attempt + 1``."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(policy.wait(state))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 10.2.3: delay-seconds or an
    HTTP-date; ``now`` is the wall clock), or None when absent or unparseable. A date in the
    past means no wait."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), 1e9)  # hundreds of digits would make inf
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # an obsolete date form without a zone: HTTP dates are GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryBudget:
    """A token bucket shared by all requests to one service (Finagle's RetryBudget).

    Each request deposits ``ratio`` tokens, each retry spends one, and ``min_per_second``
    tokens trickle in regardless so that a quiet service can still retry. The balance is
    capped at ten seconds' worth (or ``cap`` tokens), so an idle period cannot bank an
    unbounded retry storm.

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
        "deposit",
        "exhausted",
        "min_per_second",
        "ratio",
    )

    def __init__(
        self, ratio: float = 0.2, min_per_second: float = 10.0, *, cap: float | None = None
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = max(10.0 * min_per_second, 1.0) if cap is None else cap
        self._balance = self.cap
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self._deposits = itertools.count()
        self.deposit: Callable[[], object] = self._deposits.__next__
        """Count one request: the counter's own ``__next__``, so a deposit on the request
        path runs no Python function at all."""
        self._folded = 0
        self.exhausted = 0

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
        "deadline",
        "method",
        "policy",
        "refused",
        "replayable",
        "ticket",
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
        deadline: float | None = None,
        deposited: bool = False,
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        """When the whole call must end (``time.monotonic()``), or None."""
        self.budget = budget
        self.method = method
        self.replayable = replayable
        self.context = context
        self.attempt = 0
        self.tried: list[str] = []
        self.ticket: Ticket | None = None
        """The call's admission (limits, breaker), set once it is admitted; None: none."""
        self.refused = False
        """True once the budget (or ``max_retries``) refused a retry the policy allowed (for
        ``on_retry_refused``)."""
        if not deposited:  # True: the caller paid the request's deposit before its first try
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
        return self._spend()

    def _spend(self) -> bool:
        """Take what a retry costs: a ``max_retries`` slot (kept until the call ends), then
        a budget token; a slot taken for a retry the budget refuses goes back."""
        ticket = self.ticket
        taken = False
        if ticket is not None and not ticket.retrying:
            if not ticket.take_retry():
                self.refused = True
                return False
            taken = True
        if self.budget.try_withdraw():
            return True
        if taken:
            assert ticket is not None
            ticket.gate.give_back_retry(ticket)
        self.refused = True
        return False

    def retry_failure(self, failure: Failure, *, sent: bool) -> bool:
        """After an exception: retry? ``sent`` False means the request never left."""
        if sent and not self.policy.retries_method(self.method):
            return False
        return self._may_go_again()

    def attempt_end(self) -> float | None:
        """When the attempt starting now must end: the deadline or the per-try timeout."""
        per_try = self.policy.per_try_timeout
        if per_try is None:
            return self.deadline
        end = time.monotonic() + per_try
        return end if self.deadline is None else min(end, self.deadline)

    def expired(self) -> bool:
        """True once the call's deadline has passed (within a millisecond)."""
        return self.deadline is not None and time.monotonic() >= self.deadline - 0.001

    def pause(self, allowed: bool, retry_after: float | None = None) -> float | None:
        """The pause before another attempt, or None to stop with what we have.

        ``allowed``: the failure or status may be retried for this method. Stops when the
        attempts are used up, the body cannot be resent, ``retry_after`` exceeds
        ``retry_after_max``, the pause would reach the deadline, or the budget is spent
        (checked last, so a refusal for any other reason costs no token).
        """
        if not allowed or not self.replayable or self.attempt >= self.policy.attempts:
            return None
        if retry_after is None:
            pause = backoff(self.policy, self.attempt)
        elif retry_after > self.policy.retry_after_max:
            return None
        else:
            pause = retry_after
        if self.deadline is not None and time.monotonic() + pause >= self.deadline:
            return None
        if not self._spend():
            return None
        return pause

    def describe(self) -> str:
        return f"{self.attempt} attempt(s) on {', '.join(self.tried) or 'no instance'}"
