"""ProbeVerdict: the no-I/O threshold logic of active checks (Envoy semantics)."""

from __future__ import annotations

import time

from lbclient.health._checks import ProbeResult


class ProbeVerdict:
    """Consecutive passes and failures of one instance, and what they add up to.

    ``healthy`` is None until the first probe answers (the instance stays usable meanwhile);
    the first answer decides at once, later changes need the configured thresholds.
    """

    __slots__ = ("failures", "healthy", "last", "last_at", "passes")

    def __init__(self) -> None:
        self.healthy: bool | None = None
        self.passes = 0
        self.failures = 0
        self.last: ProbeResult | None = None
        self.last_at: float | None = None

    @property
    def usable(self) -> bool:
        return self.healthy is not False

    def record(self, result: ProbeResult, healthy_threshold: int, unhealthy_threshold: int) -> bool:
        """Take one result; return True when the instance's usability changed."""
        before = self.usable
        self.last, self.last_at = result, time.time()
        if result.healthy:
            self.passes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.passes = 0
        if self.healthy is None:
            self.healthy = result.healthy
        elif self.healthy and self.failures >= unhealthy_threshold:
            self.healthy = False
        elif not self.healthy and self.passes >= healthy_threshold:
            self.healthy = True
        return self.usable != before
