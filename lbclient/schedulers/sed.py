"""sed (LVS shortest expected delay): the lowest ``(in_flight + 1) / weight``.

The ``+ 1`` is the request being placed: its expected delay on each instance. Unlike ``wlc``
it prefers a heavier instance even when all are idle. Exact; ties rotate; indexed from 64
instances (see ``_scan``).
"""

from __future__ import annotations

from lbclient.schedulers._scan import ScanScheduler


class ShortestExpectedDelayScheduler(ScanScheduler):
    """Shortest expected delay, exact."""

    name = "sed"
    placing = 1
