"""nq (LVS never queue): an idle instance if there is one, else shortest expected delay.

An idle instance (nothing in flight) serves the request at once whatever its weight, so it is
taken first (the first idle one in rotation); when none is idle this is ``sed``.
"""

from __future__ import annotations

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers.sed import ShortestExpectedDelayScheduler


class NeverQueueScheduler(ShortestExpectedDelayScheduler):
    """An idle instance if any, otherwise the shortest expected delay."""

    name = "nq"

    def choose(self, context: PickContext) -> Endpoint:
        if len(self.endpoints) == 1:
            return self.endpoints[0]
        loads = [e.in_flight for e in self.endpoints]
        start = self.start()
        for first, stop in ((start, len(loads)), (0, start)):
            try:
                return self.endpoints[loads.index(0, first, stop)]
            except ValueError:
                pass
        pairs = zip(loads, self.inverse_weights, strict=True)
        return self.lowest([(load + 1) * w for load, w in pairs], start)
