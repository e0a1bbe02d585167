"""sed (LVS shortest expected delay): the lowest ``(in_flight + 1) / weight``.

The ``+ 1`` is the request being placed: its expected delay on each instance. Unlike ``wlc``
it prefers a heavier instance even when all are idle. Full scan; ties rotate.
"""

from __future__ import annotations

from lbclient._endpoint import Endpoint
from lbclient.schedulers._scan import ScanScheduler


def expected_delay(endpoint: Endpoint) -> float:
    """The delay the next request would see, in units of "one request on weight 1"."""
    return (endpoint.in_flight + 1) / endpoint.weight


class ShortestExpectedDelayScheduler(ScanScheduler):
    """Shortest expected delay, full scan."""

    name = "sed"
    cost = staticmethod(expected_delay)
