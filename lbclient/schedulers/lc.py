"""lc (LVS least-connection): the instance with the fewest requests in flight.

Exact, as IPVS's full scan (``least_request`` samples two instead, which spreads better when
many clients share the instances). Weights are ignored (see ``wlc``). Ties rotate. From 64
instances on, picks come from an index kept up to date as loads change (see ``_scan``), so
they cost the same at any list size.
"""

from __future__ import annotations

from lbclient.schedulers._scan import ScanScheduler


class LeastConnectionScheduler(ScanScheduler):
    """Fewest in-flight requests, exact."""

    name = "lc"
    weighted = False
    uses_weights = False
