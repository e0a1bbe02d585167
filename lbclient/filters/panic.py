"""The panic threshold (Envoy): when too few instances look healthy, stop trusting the verdicts.

Health verdicts can be wrong all at once (a probe path that broke in a deploy, a network
blip that made every instance fail five requests). Below ``threshold`` of the instances
judged healthy, the balancer either spreads load across all of them anyway (``fail_open``,
the default: some requests may fail, but the healthy share still answers and no single
survivor is crushed) or fails fast with NoAvailableInstance (``fail_open=False``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from lbclient import _validate as check
from lbclient._endpoint import Endpoint

log = logging.getLogger("lbclient.health")


@dataclasses.dataclass(frozen=True, slots=True)
class PanicVerdict:
    """What the balancer should use, and whether it is panicking."""

    endpoints: Sequence[Endpoint]
    panic: bool
    healthy: int
    total: int


class PanicThreshold:
    """Decide between the healthy list and everything (no I/O; logs only on changes)."""

    def __init__(self, name: str, threshold: float = 0.5, *, fail_open: bool = True) -> None:
        self.name = name
        self.threshold = check.number("panic_threshold", threshold, minimum=0.0, maximum=1.0)
        self.fail_open = check.flag("fail_open", fail_open)
        self.panicking = False

    def decide(self, everyone: Sequence[Endpoint], healthy: Sequence[Endpoint]) -> PanicVerdict:
        total, good = len(everyone), len(healthy)
        panic = total > 0 and good < self.threshold * total
        if panic != self.panicking:
            self.panicking = panic
            if panic:
                log.warning(
                    "%s: only %d of %d instance(s) healthy (panic threshold %g%%): %s",
                    self.name,
                    good,
                    total,
                    self.threshold * 100,
                    "balancing across all of them" if self.fail_open else "failing fast",
                )
            else:
                log.info("%s: %d of %d instance(s) healthy, out of panic", self.name, good, total)
        if not panic:
            return PanicVerdict(healthy, False, good, total)
        return PanicVerdict(everyone if self.fail_open else (), True, good, total)
