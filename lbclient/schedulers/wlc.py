"""wlc (LVS weighted least-connection, IPVS's default): the lowest ``in_flight / weight``.

A full scan with ties rotating; an idle fleet is therefore used in turn regardless of weight,
as in IPVS (weights start to matter once requests overlap). ``sed`` counts the request being
placed and so honours weights from the first one.
"""

from __future__ import annotations

from lbclient._endpoint import Endpoint
from lbclient.schedulers._scan import ScanScheduler


def weighted_load(endpoint: Endpoint) -> float:
    """In-flight requests per unit of weight."""
    return endpoint.in_flight / endpoint.weight


class WeightedLeastConnectionScheduler(ScanScheduler):
    """Fewest in-flight requests per unit of weight, full scan."""

    name = "wlc"

    def costs(self) -> list[float]:
        return [e.in_flight * w for e, w in zip(self.endpoints, self.inverse_weights, strict=True)]
