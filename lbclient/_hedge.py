"""Hedged requests, decided without I/O; shared by the httpx transports and the gRPC channels.

A hedge is a second attempt of the same idempotent request, sent to another instance when
the first has not answered after a delay; the first good answer wins and the others are
cancelled (Finagle's BackupRequestFilter, gRPC's hedging policy). It cuts the tail that no
scheduler can avoid: a random request that is slow, not a slow instance.

``HedgePolicy`` is the configuration. ``Hedges`` lives on each service: the latency histogram
that percentile delays read, and one ``Hedging`` (the policy with its budget) per policy in
use. ``lbclient._racing.Race`` follows one round of attempts (when the next hedge is due,
whether it may go, which answer won) and runs it for the four drivers (httpx sync and
async, gRPC sync and aio), which only start and cancel attempts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import threading
import time
from typing import Any

from lbclient import _validate as check
from lbclient._exceptions import ConfigurationError
from lbclient._retry import RetryBudget

_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")

MAX_HEDGES = 10
"""The most backup attempts one round may send."""

MIN_SAMPLES = 50
"""Latencies a percentile delay needs before the first hedge (until then: no hedging)."""


@dataclasses.dataclass(frozen=True)
class HedgePolicy:
    """When an idempotent request gets a backup attempt on another instance.

    - ``delay``: seconds after which an attempt that has not answered is hedged, or a
      percentile of the service's recent attempt latencies, ``"p95"`` (Finagle's choice for
      5% extra load) or ``"p99.5"``, tracked over a sliding 30 s window; no hedge is sent
      until ``MIN_SAMPLES`` latencies are known. Never less than ``min_delay``.
    - ``max_hedges``: backup attempts per round (hedge ``k`` leaves at ``k * delay``).
    - ``budget_ratio``, ``budget_min_per_second``: the per-service hedge budget; each hedged
      request deposits ``budget_ratio`` of a token, each hedge spends one, so hedges add at
      most that share of load (plus the trickle) even when every request is slow. A hedge
      also spends a token of the service's retry budget (Finagle needs both). At most
      ``budget_cap`` tokens are banked (it starts full).

    Only requests the retry policy may resend are hedged (httpx: its idempotent ``methods``,
    with a body that can be replayed; gRPC: the channel's ``idempotent`` methods, unary
    requests). httpx hedges the wait for the response headers: the winner's body then
    streams as usual. Off unless given: ``LoadBalancer(..., hedge=HedgePolicy())``.
    """

    delay: float | str = "p95"
    max_hedges: int = 1
    budget_ratio: float = 0.05
    budget_min_per_second: float = 0.0
    budget_cap: float = 100.0
    """Hedge tokens a quiet period may bank, so that the random bursts of slow requests
    around the average can be hedged; an outage spends them once, then the ratio holds
    (Finagle's budget holds the deposits of a 30 s window, at high rates far more)."""
    min_delay: float = 0.001
    """Finagle's ``minSendBackupAfterMs`` (1 ms): a hedge never leaves sooner."""

    def __post_init__(self) -> None:
        delay = self.delay
        if isinstance(delay, str):
            match = _PERCENTILE.fullmatch(delay)
            if match is None or not 0 < float(match.group(1)) < 100:
                raise check.invalid(
                    "HedgePolicy.delay",
                    delay,
                    "seconds, or a percentile strictly between p0 and p100 such as 'p95' or "
                    "'p99.5'",
                )
        else:
            object.__setattr__(self, "delay", _delay_seconds(delay))
        check.integer("HedgePolicy.max_hedges", self.max_hedges, minimum=1, maximum=MAX_HEDGES)
        check.number("HedgePolicy.budget_ratio", self.budget_ratio, minimum=0.0, maximum=1.0)
        check.number("HedgePolicy.budget_min_per_second", self.budget_min_per_second, minimum=0.0)
        check.number("HedgePolicy.budget_cap", self.budget_cap, minimum=1.0)
        check.seconds("HedgePolicy.min_delay", self.min_delay)

    @functools.cached_property
    def quantile(self) -> float | None:
        """The delay as a quantile in (0, 1) (``"p95"`` → 0.95), or None for fixed seconds."""
        if isinstance(self.delay, str):
            return float(self.delay[1:]) / 100
        return None


def _delay_seconds(value: object) -> float:
    """``check.seconds`` for a fixed delay, its message also naming the percentile form."""
    try:
        return check.seconds("HedgePolicy.delay", value)
    except ConfigurationError:
        raise check.invalid(
            "HedgePolicy.delay",
            value,
            "a number of seconds in [0.001, 31536000] or a percentile like 'p95'",
        ) from None


def check_hedge(value: object) -> HedgePolicy | None:
    """``value`` if it is a HedgePolicy or None (the ``hedge=`` option), else the one
    ConfigurationError shape."""
    if value is None:
        return None
    return check.instance_of("hedge", value, HedgePolicy, "lbclient.HedgePolicy('p95')")


class LatencyHistogram:
    """Attempt latencies of one service over a sliding window, and their percentiles.

    Log-spaced buckets, each 10% wider than the last, from 10 us to about half an hour: a
    percentile is read as its bucket's upper edge (at most 10% high, which errs towards
    fewer hedges). Two half-window generations: the older is dropped when the newer is
    ``window / 2`` old, so the samples span between half a window and a whole one (Finagle's
    ``WindowedPercentileHistogram``). Recording takes a lock and adds one; a percentile is
    recomputed at most every ``_REFRESH`` samples, so reading one is a dict lookup.
    """

    _FLOOR = 1e-5
    _GROWTH = 1.1
    _BUCKETS = 200
    _REFRESH = 32
    _LOG_GROWTH = math.log(_GROWTH)
    _EDGES = tuple(1e-5 * 1.1**i for i in range(200))  # _FLOOR * _GROWTH**i (class scope)

    def __init__(self, window: float = 30.0) -> None:
        self._half = window / 2
        self._current = [0] * self._BUCKETS
        self._previous = [0] * self._BUCKETS
        self._count = 0
        self._rotate_at = time.monotonic() + self._half
        self._lock = threading.Lock()
        self._version = 0
        self._since = 0
        self._cached: dict[float, tuple[int, float]] = {}

    @property
    def count(self) -> int:
        """Samples in the window."""
        return self._count

    def record(self, seconds: float) -> None:
        if seconds <= self._FLOOR:
            index = 0
        else:
            index = min(
                int(math.log(seconds / self._FLOOR) / self._LOG_GROWTH) + 1, self._BUCKETS - 1
            )
        with self._lock:
            now = time.monotonic()
            if now >= self._rotate_at:
                self._rotate(now)
            self._current[index] += 1
            self._count += 1
            self._since += 1
            if self._since >= self._REFRESH:
                self._since = 0
                self._version += 1

    def _rotate(self, now: float) -> None:
        """Drop the older generation (both, after a silence of a whole window); locked."""
        if now >= self._rotate_at + self._half:
            self._current = [0] * self._BUCKETS
        self._previous = self._current
        self._current = [0] * self._BUCKETS
        self._count = sum(self._previous)
        self._rotate_at = now + self._half
        self._version += 1

    def percentile(self, q: float) -> float | None:
        """The latency below which a share ``q`` of the window's samples fall (seconds), or
        None while fewer than ``MIN_SAMPLES`` are known."""
        cached = self._cached.get(q)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        with self._lock:
            now = time.monotonic()
            if now >= self._rotate_at:
                self._rotate(now)
            version = self._version
            value = self._compute(q)
        if value is not None:  # not yet known: asked again next time (a cheap count check)
            self._cached[q] = (version, value)
        return value

    def _compute(self, q: float) -> float | None:
        if self._count < MIN_SAMPLES:
            return None
        rank = q * self._count
        seen = 0
        for index, (newer, older) in enumerate(zip(self._current, self._previous, strict=True)):
            seen += newer + older
            if seen >= rank:
                return self._EDGES[index]
        return self._EDGES[-1]  # pragma: no cover - the counts always reach the rank


class Hedging:
    """One policy at work for one service: its hedge budget and the service's latencies."""

    __slots__ = ("_lock", "budget", "latencies", "policy", "refused", "retry_budget", "sent")

    def __init__(
        self, policy: HedgePolicy, latencies: LatencyHistogram, retry_budget: RetryBudget
    ) -> None:
        self.policy = policy
        self.latencies = latencies
        self.retry_budget = retry_budget
        self.budget = RetryBudget(
            policy.budget_ratio,
            policy.budget_min_per_second,
            cap=max(10.0 * policy.budget_min_per_second, policy.budget_cap),
        )
        self.sent = 0
        """Hedges sent."""
        self.refused = 0
        """Hedges that were due but refused by a budget."""
        self._lock = threading.Lock()

    def count(self, *, sent: bool) -> None:
        """One hedge sent, or refused by a budget (counted exactly under threads)."""
        with self._lock:
            if sent:
                self.sent += 1
            else:
                self.refused += 1

    def delay(self) -> float | None:
        """Seconds before the first hedge, or None when the percentile is not known yet."""
        policy = self.policy
        quantile = policy.quantile
        if quantile is None:
            return float(policy.delay)
        value = self.latencies.percentile(quantile)
        return None if value is None else max(value, policy.min_delay)

    def start(self) -> None:
        """A hedgeable request begins: it earns its share of a hedge."""
        self.budget.deposit()


class Hedges:
    """The hedging state of one service: its latency histogram and a ``Hedging`` per policy."""

    __slots__ = ("_by_policy", "_latencies", "_lock", "_retry_budget")

    def __init__(self, retry_budget: RetryBudget) -> None:
        self._retry_budget = retry_budget
        self._latencies: LatencyHistogram | None = None
        self._by_policy: dict[HedgePolicy, Hedging] = {}
        self._lock = threading.Lock()

    def get(self, policy: HedgePolicy) -> Hedging:
        hedging = self._by_policy.get(policy)
        if hedging is None:
            with self._lock:
                hedging = self._by_policy.get(policy)
                if hedging is None:
                    if self._latencies is None:
                        self._latencies = LatencyHistogram()
                    hedging = Hedging(policy, self._latencies, self._retry_budget)
                    self._by_policy[policy] = hedging
        return hedging

    def stats(self) -> dict[str, Any]:
        """Hedges sent and refused by a budget, over every policy used for this service."""
        policies = list(self._by_policy.values())
        return {
            "hedges": sum(h.sent for h in policies),
            "hedges_refused_by_budget": sum(h.refused for h in policies),
        }
