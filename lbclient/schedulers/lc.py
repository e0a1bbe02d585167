"""lc (LVS least-connection): the instance with the fewest requests in flight.

A full scan, so the answer is exact (``least_request`` samples two instead, in O(1), and is
the better choice for large lists). Weights are ignored (see ``wlc``). Ties rotate.
"""

from __future__ import annotations

from lbclient.schedulers._scan import ScanScheduler


class LeastConnectionScheduler(ScanScheduler):
    """Fewest in-flight requests, full scan."""

    name = "lc"
    uses_weights = False

    def costs(self) -> list[int]:
        return [e.in_flight for e in self.endpoints]
