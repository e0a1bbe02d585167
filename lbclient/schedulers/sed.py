"""sed (LVS shortest expected delay): the lowest ``(in_flight + 1) / weight``.

The ``+ 1`` is the request being placed: its expected delay on each instance. Unlike ``wlc``
it prefers a heavier instance even when all are idle. Full scan; ties rotate.
"""

from __future__ import annotations

from lbclient.schedulers._scan import ScanScheduler


class ShortestExpectedDelayScheduler(ScanScheduler):
    """Shortest expected delay, full scan."""

    name = "sed"

    def costs(self) -> list[float]:
        pairs = zip(self.endpoints, self.inverse_weights, strict=True)
        return [(e.in_flight + 1) * w for e, w in pairs]
