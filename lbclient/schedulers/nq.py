"""nq (LVS never queue): an idle instance if there is one, else shortest expected delay.

An idle instance (nothing in flight) serves the request at once whatever its weight, so it is
taken first (the first idle one in rotation); when none is idle this is ``sed``.
"""

from __future__ import annotations

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._scan import ScanScheduler
from lbclient.schedulers.sed import expected_delay


class NeverQueueScheduler(ScanScheduler):
    """An idle instance if any, otherwise the shortest expected delay."""

    name = "nq"
    cost = staticmethod(expected_delay)

    def choose(self, context: PickContext) -> Endpoint:
        best: Endpoint | None = None
        best_cost = 0.0
        for endpoint in self.rotation():
            if not endpoint.in_flight:
                return endpoint
            cost = expected_delay(endpoint)
            if best is None or cost < best_cost:
                best, best_cost = endpoint, cost
        assert best is not None
        return best
