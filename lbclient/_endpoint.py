"""Endpoint: the live, mutable state of one instance (in-flight, outcomes, latency).

Schedulers are rebuilt only when the usable list changes, but they read live load from the
endpoints they were built over. Counters change under the endpoint's lock (one of 256 shared
by id, never a global one), so picks on different instances rarely contend.

A few schedulers keep an index of the live load (``lc``'s buckets of instances by in-flight
count) instead of scanning every endpoint on every pick. They ``watch`` the endpoints they were
built over and are told each new in-flight count, inside the endpoint's lock so that the counts
of one endpoint reach a watcher in order. Watchers are held weakly (a replaced scheduler drops
out when it is collected); an endpoint nobody watches pays one empty-tuple test per change.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from lbclient._instance import ServiceInstance
from lbclient._outcome import Outcome

DEFAULT_EWMA_DECAY = 10.0
"""Finagle's Peak EWMA decay time (seconds): how fast an old latency peak is forgotten."""


class LoadWatcher(Protocol):
    """What ``Endpoint.watch`` accepts: told every new in-flight count of a watched endpoint."""

    def moved(self, index: int, in_flight: int) -> None:
        """``index`` (the watcher's own number for the endpoint) now has ``in_flight``."""


WatcherRef = Callable[[], LoadWatcher | None]
"""A weak reference to a LoadWatcher (``weakref.ref(watcher)``): None once it is collected."""


_STRIPES = tuple(threading.Lock() for _ in range(256))
"""Endpoint counters change under one of these locks, picked by instance id: 100,000
instances do not cost 100,000 locks, and picks on different instances rarely meet. Code
holding one never takes another (a load index's own lock is not one of these)."""


class Endpoint:
    """One instance plus everything the balancer learned about it while sending it traffic."""

    __slots__ = (
        "_cost",
        "_lock",
        "_stamp",
        "_watchers",
        "decay",
        "failures",
        "id",
        "in_flight",
        "instance",
        "last_failure",
        "last_success",
        "picks",
        "successes",
        "weight",
    )

    def __init__(self, instance: ServiceInstance, *, decay: float = DEFAULT_EWMA_DECAY) -> None:
        self.instance = instance
        self.id = instance.id
        self.weight = instance.weight
        """Effective weight the schedulers use (the instance's, adjusted e.g. by slow start)."""
        self.decay = decay
        self.in_flight = 0
        self.picks = 0
        self.successes = 0
        self.failures = 0
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self._cost = 0.0
        self._stamp = 0.0  # the age of a zero cost does not matter (one shared float)
        self._lock = _STRIPES[hash(self.id) % len(_STRIPES)]
        self._watchers: tuple[tuple[WatcherRef, int], ...] = ()

    def __repr__(self) -> str:
        return f"<Endpoint {self.id} in_flight={self.in_flight} weight={self.weight:g}>"

    def begin(self) -> None:
        """Count a request that starts on this instance."""
        with self._lock:
            self.in_flight += 1
            self.picks += 1
            if self._watchers:
                self._tell(self.in_flight)

    def try_begin(self, limit: int) -> bool:
        """``begin`` unless ``limit`` requests are in flight already (then False)."""
        with self._lock:
            if self.in_flight >= limit:
                return False
            self.in_flight += 1
            self.picks += 1
            return True

    def finish(self, outcome: Outcome) -> None:
        """Release the in-flight slot and learn from the outcome (exactly once per begin)."""
        now = time.monotonic()
        if outcome.failure is None and not outcome.cancelled:
            self.succeeded(outcome.latency, now)
            return
        with self._lock:
            self.in_flight -= 1
            if self._watchers:
                self._tell(self.in_flight)
            if outcome.cancelled:
                return
            self.failures += 1
            self.last_failure = now
            # A fast failure (connection refused, an instant 503) must never make an instance
            # look faster to latency-aware schedulers: it only counts as a peak (the Peak EWMA
            # never decays towards a failure's latency).
            if outcome.latency > self._cost:
                self._cost = outcome.latency
            self._stamp = now

    def succeeded(self, rtt: float, now: float) -> None:
        """``finish`` of an attempt that succeeded in ``rtt`` seconds, ending at ``now``
        (``time.monotonic()``): the request path's shortcut, with no Outcome to build."""
        with self._lock:
            self.in_flight -= 1
            if self._watchers:
                self._tell(self.in_flight)
            self.successes += 1
            self.last_success = now
            # Peak EWMA (Finagle): jump up to a peak at once, decay towards new samples slowly.
            cost = self._cost
            if rtt > cost:
                self._cost = rtt
            else:
                # w = exp(-x): for the short gaps of a busy instance (under 1% of the decay
                # time) its Taylor polynomial of degree 3 (relative error under 5e-10):
                # between two real network calls a call into libm costs microseconds of cold
                # cache, a few float operations do not.
                x = (now - self._stamp) / self.decay
                w = 1.0 - x * (1.0 - x * (0.5 - x / 6.0)) if x < 0.01 else math.exp(-x)
                self._cost = cost * w + rtt * (1.0 - w)
            self._stamp = now

    def watch(self, watcher: WatcherRef, index: int) -> None:
        """Tell ``watcher`` (a weak reference) every in-flight change, as ``moved(index, n)``.

        Watchers read ``in_flight`` after registering: a change racing with their set-up is
        either seen by that read or reported afterwards, never lost.
        """
        with self._lock:
            watchers = self._watchers
            for ref, _ in watchers:  # one or two: the index being replaced, maybe its own
                if ref() is None:  # a dead one goes (a loop: a load index watches 10,000)
                    watchers = tuple(w for w in watchers if w[0]() is not None)
                    break
            self._watchers = (*watchers, (watcher, index))

    def _tell(self, in_flight: int) -> None:
        """Report ``in_flight`` to every live watcher (the caller holds ``_lock``)."""
        dead = False
        for ref, index in self._watchers:
            watcher = ref()
            if watcher is None:
                dead = True
            else:
                watcher.moved(index, in_flight)
        if dead:
            self._watchers = tuple(w for w in self._watchers if w[0]() is not None)

    @property
    def latency(self) -> float:
        """Peak-EWMA latency in seconds, decayed to now (0.0 until the first answer)."""
        elapsed = time.monotonic() - self._stamp
        return self._cost * math.exp(-elapsed / self.decay) if elapsed > 0 else self._cost

    def set_instance(self, instance: ServiceInstance) -> None:
        """Take a new description of the same instance (weight, tags) and keep the history."""
        self.instance = instance
        self.weight = instance.weight
