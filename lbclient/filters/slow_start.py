"""Slow start (Envoy): a new or readmitted instance's weight ramps up over a window.

A cold instance (empty caches, JIT, connection pools) answers slowly at first; sending it a
full share at once makes the first seconds after a deploy or a readmission the worst ones.
The effective weight is ``weight x max(min_weight_percent/100, (t / window) ** (1/aggression))``
where ``t`` is the time since the instance became usable (at least one second, as in Envoy).
Instances present when the balancer starts do not ramp (there is nobody to shift load to).

Only weight-aware schedulers (weighted round robin, least request, ...) see the ramp. The
scheduler is rebuilt on a timer, ``steps`` times per window, never per request.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from lbclient import _validate as check
from lbclient._endpoint import Endpoint
from lbclient.filters._timed import TimedFilter


@dataclasses.dataclass(frozen=True)
class SlowStart:
    """``LoadBalancer(registry, slow_start=SlowStart(window=30))``."""

    window: float = 30.0
    aggression: float = 1.0
    min_weight_percent: float = 10.0
    steps: int = 10

    def __post_init__(self) -> None:
        check.seconds("SlowStart.window", self.window)
        check.number("SlowStart.aggression", self.aggression, above=0.0, maximum=1000.0)
        check.number(
            "SlowStart.min_weight_percent", self.min_weight_percent, above=0.0, maximum=100.0
        )
        check.integer("SlowStart.steps", self.steps, minimum=1, maximum=1000)

    def factor(self, elapsed: float) -> float:
        """The share of its weight an instance gets ``elapsed`` seconds after becoming usable."""
        if elapsed >= self.window:
            return 1.0
        ramp: float = (max(elapsed, 1.0) / self.window) ** (1.0 / self.aggression)
        return min(1.0, max(self.min_weight_percent / 100.0, ramp))


_WARM = float("-inf")


class SlowStartFilter(TimedFilter):
    """Scale ``Endpoint.weight`` of recently admitted instances (runs last in the chain)."""

    def __init__(self, settings: SlowStart | None = None) -> None:
        self.settings = settings or SlowStart()
        self._since: dict[str, float] = {}
        self._started = False
        self._tick_pending = False

    def apply(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        now = time.monotonic()
        since = self._since
        present = {e.id for e in endpoints}
        for gone in [i for i in since if i not in present]:
            del since[gone]  # left the usable list: ramp again when it comes back
        ramping = False
        for endpoint in endpoints:
            start = since.get(endpoint.id)
            if start is None:
                start = since[endpoint.id] = now if self._started else _WARM
            factor = self.settings.factor(now - start)
            if factor < 1.0:
                endpoint.weight *= factor
                ramping = True
        self._started = self._started or bool(endpoints)
        if ramping and not self._tick_pending:
            self._tick_pending = True
            self.later(self.settings.window / self.settings.steps, self._tick)
        return endpoints

    def _tick(self) -> None:
        self._tick_pending = False
        self.refresh()

    def stats(self, endpoint: Endpoint) -> dict[str, Any]:
        start = self._since.get(endpoint.id)
        if start is None or start == _WARM:
            return {"slow_start": None}
        factor = self.settings.factor(time.monotonic() - start)
        return {"slow_start": None if factor >= 1.0 else round(factor, 3)}
