"""HeartbeatFilter: an instance silent for longer than the window is taken out.

Signs of life, whichever comes last: a successful request (``Endpoint.last_success``), a
passing active probe, or a registry heartbeat (a registry that learns of liveness, such as a
Consul TTL check passing, calls ``ServiceState.heartbeat(instance_id)``). A new instance gets
one full window of grace from when it appeared.

How it combines: the registry decides who exists; active probes, this filter and outlier
detection each veto independently (an instance must pass all of them), and the panic
threshold overrides the vetoes when too few instances are left. Traffic alone cannot bring a
silent instance back (it gets none while out), so pair a window with a probe or a registry
that reports heartbeats; the window is then "no probe has passed for this long".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from lbclient import _validate as check
from lbclient._endpoint import Endpoint
from lbclient.filters._base import ServiceView
from lbclient.filters._timed import TimedFilter

log = logging.getLogger("lbclient.health")


class HeartbeatFilter(TimedFilter):
    """Keep out instances with no sign of life within ``timeout`` seconds."""

    judges_health = True

    def __init__(self, timeout: float) -> None:
        self.timeout = check.seconds("heartbeat_timeout", timeout)
        self._seen: dict[str, float] = {}
        self._silent: set[str] = set()
        self._lock = threading.Lock()

    def bind(self, state: ServiceView) -> None:
        super().bind(state)
        self.later(self.timeout / 4, self._tick)

    def on_membership(self, added: Sequence[Endpoint], removed: Sequence[Endpoint]) -> None:
        now = time.monotonic()
        with self._lock:
            for endpoint in removed:
                self._seen.pop(endpoint.id, None)
                self._silent.discard(endpoint.id)
            for endpoint in added:
                self._seen[endpoint.id] = now

    def on_heartbeat(self, endpoint: Endpoint) -> None:
        with self._lock:
            if endpoint.id not in self._seen:
                return
            self._seen[endpoint.id] = time.monotonic()
            revived = endpoint.id in self._silent
        if revived:
            self._check()

    def _last_sign(self, endpoint: Endpoint) -> float:
        seen = self._seen.get(endpoint.id, 0.0)
        success = endpoint.last_success
        return seen if success is None else max(seen, success)

    def apply(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        silent = self._silent
        return [e for e in endpoints if e.id not in silent]

    def _check(self) -> None:
        """Recompute who is silent; log and rebuild only when that changes."""
        now = time.monotonic()
        endpoints = list(self.state.endpoints.values())
        with self._lock:
            silent = {
                e.id
                for e in endpoints
                if e.id in self._seen and now - self._last_sign(e) > self.timeout
            }
            went, came = silent - self._silent, self._silent - silent
            self._silent = silent
        for instance_id in sorted(went):
            log.warning(
                "%s: instance %s silent for more than %gs, taken out",
                self.state.name,
                instance_id,
                self.timeout,
            )
        for instance_id in sorted(came):
            log.info("%s: instance %s shows signs of life again", self.state.name, instance_id)
        if went or came:
            self.refresh()

    def _tick(self) -> None:
        self._check()
        self.later(self.timeout / 4, self._tick)

    def stats(self, endpoint: Endpoint) -> dict[str, Any]:
        if endpoint.id not in self._seen:
            return {}
        silence = time.monotonic() - self._last_sign(endpoint)
        return {"silent": endpoint.id in self._silent, "silence_seconds": round(silence, 3)}
