"""Passive outlier detection: eject instances that fail the requests they already serve.

Envoy's and gRPC A50's algorithm, fed by ``on_complete`` (every finished attempt):

- Consecutive failures, counted separately and each configurable: 5xx answers
  (``Failure.SERVER`` and ``GATEWAY``), gateway failures only (502/503/504), and local-origin
  failures (``CONNECT``, ``TIMEOUT``, ``RESET``: the instance never answered). A success resets
  them all; any answer resets the local-origin count. Ejection on these is immediate.
- Every ``interval``: success rate (eject below mean - ``stdev_factor`` x stdev, among hosts
  with enough requests, when enough hosts qualify) and failure percentage (eject at or above
  the threshold).
- An ejection lasts ``base_ejection_time`` x the instance's number of ejections, capped at
  ``max_ejection_time``; the count decays by one per interval spent un-ejected. After the
  time the instance is readmitted (slow start, if configured, then ramps it up).
- ``max_ejection_percent`` caps how many are out at once, but one ejection is always allowed
  (Envoy, gRPC A50).

Defaults are Envoy's except ``max_ejection_percent``: Envoy's 10% ejects only one host of
five even when two are dead. We use 50%: with up to half ejected a service keeps at least
half its capacity, which is exactly where the panic threshold (50%) would take over anyway,
so ejecting more could never help. Rounding: an ejection is allowed while the ejected count
after it stays within the percentage (2 of 5, 1 of 3, 2 of 4), and always for the first one.

``on_complete`` is O(1) under a per-instance lock; only an ejection (rare) takes the filter
lock and rebuilds the usable list.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from lbclient import _validate as check
from lbclient._endpoint import Endpoint
from lbclient._outcome import Failure, Outcome
from lbclient.filters._base import ServiceView
from lbclient.filters._timed import TimedFilter

log = logging.getLogger("lbclient.health")


@dataclasses.dataclass(frozen=True)
class OutlierDetection:
    """Settings of passive outlier detection; ``None`` turns one detector off.

    ``LoadBalancer(registry, outlier=OutlierDetection(consecutive_5xx=3))``;
    ``outlier=None`` turns the whole thing off.
    """

    consecutive_5xx: int | None = 5
    consecutive_gateway_failure: int | None = None
    """Off by default, as in Envoy (``enforcing_consecutive_gateway_failure`` is 0 there)."""
    consecutive_local_origin_failure: int | None = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0
    success_rate_stdev_factor: float | None = 1.9
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    failure_percentage_threshold: float | None = None
    """Off by default, as in Envoy (``enforcing_failure_percentage`` is 0); Envoy's level is 85."""
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    uneject_on_passing_probe: bool = True
    """With an active health check, a passing probe readmits an ejected instance at once
    (Envoy's ``successful_active_health_check_uneject_host``, default true)."""

    def __post_init__(self) -> None:
        for name in (
            "consecutive_5xx",
            "consecutive_gateway_failure",
            "consecutive_local_origin_failure",
        ):
            check.optional(
                check.integer, f"OutlierDetection.{name}", getattr(self, name),
                minimum=1, maximum=MAX_COUNT,
            )  # fmt: skip
        for name in ("interval", "base_ejection_time", "max_ejection_time"):
            check.seconds(f"OutlierDetection.{name}", getattr(self, name))
        check.optional(
            check.number, "OutlierDetection.failure_percentage_threshold",
            self.failure_percentage_threshold, minimum=0.0, maximum=100.0,
        )  # fmt: skip
        check.number(
            "OutlierDetection.max_ejection_percent", self.max_ejection_percent,
            minimum=0.0, maximum=100.0,
        )  # fmt: skip
        check.optional(
            check.number, "OutlierDetection.success_rate_stdev_factor",
            self.success_rate_stdev_factor, minimum=0.0, maximum=100.0,
        )  # fmt: skip
        for name in (
            "success_rate_minimum_hosts",
            "success_rate_request_volume",
            "failure_percentage_minimum_hosts",
            "failure_percentage_request_volume",
        ):
            check.integer(f"OutlierDetection.{name}", getattr(self, name), minimum=0,
                          maximum=MAX_COUNT)  # fmt: skip
        check.flag("OutlierDetection.uneject_on_passing_probe", self.uneject_on_passing_probe)


MAX_COUNT = 1_000_000
"""The largest count a threshold or volume accepts."""


_STRIPE_COUNT = 64
_STRIPES = tuple(threading.Lock() for _ in range(_STRIPE_COUNT))
"""The records' locks: a record's counters change under one of these, picked by instance id
(never two at once), so 100,000 instances do not cost 100,000 locks."""


def _lock_of(instance_id: str) -> threading.Lock:
    return _STRIPES[hash(instance_id) % _STRIPE_COUNT]


class _Record:
    """One instance's counters and ejection (one per instance: kept to 10 slots). A record
    that left ``_records`` belongs to an instance gone from the list.

    Successes are not counted here: the endpoint counts them anyway (``Endpoint.successes``),
    so a success costs the filter nothing. ``swept`` is that count at the last sweep (the
    interval's successes are the difference) and ``seen`` its value at the last failure (a
    failure that finds it moved knows a success broke the streak)."""

    __slots__ = (
        "bad",
        "ejected_until",
        "ejections",
        "endpoint",
        "gateway",
        "local",
        "reason",
        "seen",
        "server",
        "swept",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.server = self.gateway = self.local = 0
        self.seen = self.swept = endpoint.successes
        self.bad = 0
        self.ejections = 0
        self.ejected_until: float | None = None
        self.reason: str | None = None

    def reset(self) -> None:
        self.server = self.gateway = self.local = 0


class OutlierFilter(TimedFilter):
    """Keep ejected instances out of the usable list until their ejection time is over."""

    judges_health = True

    def __init__(self, settings: OutlierDetection | None = None) -> None:
        self.settings = settings or OutlierDetection()
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()
        self._ejected = 0

    def bind(self, state: ServiceView) -> None:
        super().bind(state)
        self.later(self.settings.interval, self._sweep)

    def on_membership(self, added: Sequence[Endpoint], removed: Sequence[Endpoint]) -> None:
        with self._lock:
            for endpoint in removed:
                record = self._records.pop(endpoint.id, None)
                if record is not None and record.ejected_until is not None:
                    self._ejected -= 1
            for endpoint in added:
                self._records[endpoint.id] = _Record(endpoint)

    def apply(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        records = self._records
        return [e for e in endpoints if (r := records.get(e.id)) is None or r.ejected_until is None]

    # -- the hot path ----------------------------------------------------------------------

    success_feedback = False  # successes are read from Endpoint.successes (see _Record)

    def on_complete(self, endpoint: Endpoint, outcome: Outcome) -> None:
        failure = outcome.failure
        if failure is None or outcome.cancelled:
            return
        record = self._records.get(endpoint.id)
        if record is None:
            return
        s = self.settings
        reason = None
        with _lock_of(endpoint.id):
            successes = endpoint.successes
            if successes != record.seen:  # a success since the last failure: a new streak
                record.seen = successes
                record.server = record.gateway = record.local = 0
            record.bad += 1
            if failure is Failure.SERVER or failure is Failure.GATEWAY:
                record.local = 0
                record.server += 1
                record.gateway = record.gateway + 1 if failure is Failure.GATEWAY else 0
                if s.consecutive_5xx is not None and record.server >= s.consecutive_5xx:
                    reason = f"{record.server} consecutive 5xx"
                elif (
                    s.consecutive_gateway_failure is not None
                    and record.gateway >= s.consecutive_gateway_failure
                ):
                    reason = f"{record.gateway} consecutive gateway failures"
            elif failure.local_origin:
                record.local += 1
                limit = s.consecutive_local_origin_failure
                if limit is not None and record.local >= limit:
                    reason = f"{record.local} consecutive local-origin failures ({failure.value})"
            if reason is None or record.ejected_until is not None:
                return
        self._eject(endpoint.id, record, reason, off_request_path=True)

    # -- ejection and readmission ----------------------------------------------------------

    def _eject(
        self, instance_id: str, record: _Record, reason: str, *, off_request_path: bool = False
    ) -> bool:
        s = self.settings
        with self._lock:
            gone = self._records.get(instance_id) is not record
            if gone or record.ejected_until is not None or self._closed:
                return False
            total = len(self._records)
            if self._ejected > 0 and (self._ejected + 1) * 100 > s.max_ejection_percent * total:
                log.debug(
                    "%s: not ejecting %s (%s): max_ejection_percent=%g reached",
                    self.state.name,
                    instance_id,
                    reason,
                    s.max_ejection_percent,
                )
                return False
            record.ejections += 1
            duration = min(
                s.base_ejection_time * record.ejections,
                max(s.base_ejection_time, s.max_ejection_time),
            )
            record.ejected_until = time.monotonic() + duration
            record.reason = reason
            record.reset()
            self._ejected += 1
        log.warning(
            "%s: ejected instance %s for %.3gs: %s (ejection #%d)",
            self.state.name,
            instance_id,
            duration,
            reason,
            record.ejections,
        )
        self.later(duration, self._readmit, instance_id, record)
        self.refresh(off_request_path=off_request_path)
        self._tell("on_ejection", instance_id, reason_kind(reason), reason)
        return True

    def _readmit(self, instance_id: str, record: _Record, why: str = "its ejection time") -> None:
        with self._lock:
            if self._records.get(instance_id) is not record or record.ejected_until is None:
                return  # gone from the list, or readmitted already
            record.ejected_until = None
            record.reset()
            self._ejected -= 1
        log.info("%s: readmitted instance %s after %s", self.state.name, instance_id, why)
        self.refresh()
        self._tell("on_readmission", instance_id, why)

    def _tell(self, hook: str, instance_id: str, *args: str) -> None:
        endpoint = self.state.endpoints.get(instance_id)
        if self.state.listeners and endpoint is not None:
            self.state.emit(hook, endpoint.instance, *args)

    def probe_passed(self, endpoint: Endpoint) -> None:
        """An active probe passed: readmit the instance now if it is ejected (Envoy)."""
        record = self._records.get(endpoint.id)
        if (
            record is not None
            and record.ejected_until is not None
            and self.settings.uneject_on_passing_probe
        ):
            self._readmit(endpoint.id, record, "a passing health check")

    def _sweep(self) -> None:
        """Every interval: success-rate and failure-percentage ejection, multiplier decay."""
        s = self.settings
        samples: list[tuple[str, _Record, int, int]] = []
        with self._lock:
            items = list(self._records.items())
        for instance_id, record in items:
            with _lock_of(instance_id):
                successes = record.endpoint.successes
                ok, bad = successes - record.swept, record.bad
                record.swept, record.bad = successes, 0
                if record.ejected_until is None:
                    if record.ejections > 0:  # A50: good behaviour slowly earns trust back
                        record.ejections -= 1
                    samples.append((instance_id, record, ok, bad))
        for instance_id, record, reason in self._interval_outliers(samples):
            self._eject(instance_id, record, reason)
        self.later(s.interval, self._sweep)

    def _interval_outliers(
        self, samples: list[tuple[str, _Record, int, int]]
    ) -> list[tuple[str, _Record, str]]:
        s = self.settings
        found: list[tuple[str, _Record, str]] = []
        if s.success_rate_stdev_factor is not None:
            busy = [x for x in samples if x[2] + x[3] >= s.success_rate_request_volume]
            if len(busy) >= s.success_rate_minimum_hosts:
                rates = [ok / (ok + bad) for _, _, ok, bad in busy]
                mean = sum(rates) / len(rates)
                stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
                floor = mean - s.success_rate_stdev_factor * stdev
                for (instance_id, record, _, _), rate in zip(busy, rates, strict=True):
                    if rate < floor:
                        found.append(
                            (
                                instance_id,
                                record,
                                f"success rate {rate:.1%} < {floor:.1%} (mean {mean:.1%})",
                            )
                        )
        if s.failure_percentage_threshold is not None:
            busy = [x for x in samples if x[2] + x[3] >= s.failure_percentage_request_volume]
            if len(busy) >= s.failure_percentage_minimum_hosts:
                for instance_id, record, ok, bad in busy:
                    percent = 100.0 * bad / (ok + bad)
                    if percent >= s.failure_percentage_threshold:
                        found.append((instance_id, record, f"failure percentage {percent:.0f}%"))
        return found

    def stats(self, endpoint: Endpoint) -> dict[str, Any]:
        record = self._records.get(endpoint.id)
        if record is None:
            return {}
        until = record.ejected_until
        return {
            "ejected": until is not None,
            "ejected_until": None if until is None else time.time() + (until - time.monotonic()),
            "ejection_reason": record.reason if until is not None else None,
            "ejections": record.ejections,
        }


_REASON_KINDS = (
    ("consecutive 5xx", "consecutive_5xx"),
    ("consecutive gateway", "consecutive_gateway_failure"),
    ("consecutive local-origin", "consecutive_local_origin_failure"),
    ("success rate", "success_rate"),
    ("failure percentage", "failure_percentage"),
)


def reason_kind(reason: str) -> str:
    """The fixed name of an ejection reason (a metric label), from its wording above."""
    for words, kind in _REASON_KINDS:
        if words in reason:
            return kind
    return "other"
