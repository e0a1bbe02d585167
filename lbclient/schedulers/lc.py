"""lc (LVS least-connection): the instance with the fewest requests in flight.

A full scan, so the answer is exact (``least_request`` samples two instead, in O(1), and is
the better choice for large lists). Weights are ignored (see ``wlc``). Ties rotate.
"""

from __future__ import annotations

from lbclient._endpoint import Endpoint
from lbclient.schedulers._scan import ScanScheduler


def in_flight(endpoint: Endpoint) -> float:
    """Requests in flight, whatever the weight."""
    return endpoint.in_flight


class LeastConnectionScheduler(ScanScheduler):
    """Fewest in-flight requests, full scan."""

    name = "lc"
    cost = staticmethod(in_flight)
