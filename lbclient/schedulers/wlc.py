"""wlc (LVS weighted least-connection, IPVS's default): the lowest ``in_flight / weight``.

Exact, with ties rotating; an idle fleet is therefore used in turn regardless of weight, as
in IPVS (weights start to matter once requests overlap). ``sed`` counts the request being
placed and so honours weights from the first one. Indexed from 64 instances (see ``_scan``).
"""

from __future__ import annotations

from lbclient._endpoint import Endpoint
from lbclient.schedulers._scan import ScanScheduler


def weighted_load(endpoint: Endpoint) -> float:
    """In-flight requests per unit of weight."""
    return endpoint.in_flight / endpoint.weight


class WeightedLeastConnectionScheduler(ScanScheduler):
    """Fewest in-flight requests per unit of weight, exact."""

    name = "wlc"
