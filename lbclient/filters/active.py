"""HealthCheckFilter: drives a service's active probes and keeps failing instances out.

Each instance gets its own schedule on the shared timer (first probe soon after it appears,
then every ``interval`` +/- jitter); the probe itself runs on a pool of ``concurrency``
threads owned by this filter, so a slow or dead instance never delays anyone's request and a
large service never opens more than ``concurrency`` probe sockets at once. ``close()``
cancels the schedules and joins the pool.
"""

from __future__ import annotations

import logging
import random
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lbclient._endpoint import Endpoint
from lbclient.filters._base import ServiceView
from lbclient.filters._timed import TimedFilter
from lbclient.filters.outlier import OutlierFilter
from lbclient.health._checks import HealthCheck, Prober, ProbeResult
from lbclient.health._state import ProbeVerdict
from lbclient.health._timer import Call

log = logging.getLogger("lbclient.health")


class _Probed:
    __slots__ = ("call", "endpoint", "gone", "running", "seq", "verdict")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.verdict = ProbeVerdict()
        self.call: Call | None = None
        self.seq = 0
        """Generation of the live schedule: a call from an older one is void, so a pushed
        change (gRPC Watch) never leaves two probe schedules running for one instance."""
        self.running = False
        self.gone = False


class HealthCheckFilter(TimedFilter):
    """Keep out instances whose active probe fails (see HealthCheck for the thresholds)."""

    judges_health = True

    def __init__(self, check: HealthCheck, *, rng: random.Random | None = None) -> None:
        self.check = check
        self._rng = rng or random.Random()
        self._probed: dict[str, _Probed] = {}
        self._lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None
        self._prober: Prober | None = None

    def bind(self, state: ServiceView) -> None:
        super().bind(state)
        self._prober = self.check.open()
        self._pool = ThreadPoolExecutor(
            self.check.concurrency, thread_name_prefix=f"lbclient-probe-{state.name}"
        )
        # Dropped without close(): still release the pool and the prober's connections.
        self._release_probes = weakref.finalize(self, _release, self._pool, self._prober)
        subscribe = getattr(self._prober, "subscribe", None)
        if subscribe is not None:  # a prober that is told of changes (gRPC Watch)
            subscribe(weakref.WeakMethod(self._pushed))

    def on_membership(self, added: Sequence[Endpoint], removed: Sequence[Endpoint]) -> None:
        with self._lock:
            for endpoint in removed:
                probed = self._probed.pop(endpoint.id, None)
                if probed is not None:
                    probed.gone = True
                    if probed.call is not None:
                        probed.call.cancel()
            for endpoint in added:
                probed = _Probed(endpoint)
                self._probed[endpoint.id] = probed
                self._plan(probed, self._rng.uniform(0, self.check.jitter * self.check.interval))
        if self._prober is not None:
            for endpoint in removed:
                self._prober.forget(endpoint.instance)

    def apply(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        probed = self._probed
        return [e for e in endpoints if (p := probed.get(e.id)) is None or p.verdict.usable]

    def _plan(self, probed: _Probed, delay: float) -> None:
        with self._lock:
            if probed.call is not None:
                probed.call.cancel()
            probed.seq += 1
            probed.call = self.later(delay, self._due, probed, probed.seq)

    def _pushed(self, instance_id: str) -> None:
        """The prober learned of a change by itself: probe now instead of at the next tick."""
        probed = self._probed.get(instance_id)
        if probed is not None and not probed.gone:
            self._plan(probed, 0.0)

    def _due(self, probed: _Probed, seq: int) -> None:
        # On the timer thread: hand the probe to the pool, never run it here.
        if seq != probed.seq or probed.gone or self._closed or self._pool is None:
            return
        if probed.running:  # the previous probe is still out (timeout > interval)
            self._schedule(probed)
            return
        probed.running = True
        try:
            self._pool.submit(self._run, probed)
        except RuntimeError:  # the pool shut down under us: we are closing
            probed.running = False

    def _run(self, probed: _Probed) -> None:
        assert self._prober is not None
        try:
            result = self._prober.probe(probed.endpoint.instance)
        except Exception as exc:  # a prober must not raise; if it does, the probe failed
            result = ProbeResult(False, f"{type(exc).__name__}: {exc}")
        finally:
            probed.running = False
        if probed.gone or self._closed:
            return
        verdict = probed.verdict
        was = verdict.healthy
        changed = verdict.record(
            result, self.check.healthy_threshold, self.check.unhealthy_threshold
        )
        if verdict.healthy != was and (was is not None or not verdict.healthy):
            level = logging.INFO if verdict.healthy else logging.WARNING
            log.log(
                level,
                "%s: instance %s is %s by its health check (%s)",
                self.state.name,
                probed.endpoint.id,
                "healthy" if verdict.healthy else "unhealthy",
                result.detail,
            )
        if self.state.listeners:
            self.state.emit("on_probe", probed.endpoint.instance, result.healthy, result.detail)
        if result.healthy:
            self.state.heartbeat(probed.endpoint.id)
            for f in self.state.filters:
                if isinstance(f, OutlierFilter):
                    f.probe_passed(probed.endpoint)
        if changed:
            self.refresh()
        self._schedule(probed)

    def _schedule(self, probed: _Probed) -> None:
        spread = self.check.jitter * self.check.interval
        self._plan(probed, self.check.interval + self._rng.uniform(-spread, spread))

    def stats(self, endpoint: Endpoint) -> dict[str, Any]:
        probed = self._probed.get(endpoint.id)
        if probed is None:
            return {}
        verdict = probed.verdict
        return {
            "healthy": verdict.healthy,
            "last_probe": verdict.last.detail if verdict.last else None,
            "last_probe_at": verdict.last_at,
        }

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        with self._lock:
            for probed in self._probed.values():
                probed.gone = True
                if probed.call is not None:
                    probed.call.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._release_probes()


def _release(pool: ThreadPoolExecutor, prober: Prober) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
    prober.close()
