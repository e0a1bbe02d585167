"""twos (LVS "weighted random two choices"): two weighted draws, the less loaded one wins.

Two instances are drawn at random in proportion to their weights (they may be the same one,
as in IPVS), and the one with fewer requests in flight per unit of weight is used; ties go to
the first draw, so an idle fleet is used exactly by weight. Differs from ``least_request``,
which draws uniformly when weights are equal and scores by Envoy's dynamic weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._weights import WeightedDraw


class TwoChoicesScheduler(Scheduler):
    """Weighted random two choices (IPVS ``twos``)."""

    name = "twos"

    def __init__(self, endpoints: Sequence[Endpoint], **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self._draw = WeightedDraw([e.weight for e in self.endpoints])

    def choose(self, context: PickContext) -> Endpoint:
        first = self.endpoints[self._draw.draw(self.rng)]
        second = self.endpoints[self._draw.draw(self.rng)]
        # Cross-multiplied in_flight/weight comparison: no division on the hot path.
        if second.in_flight * first.weight < first.in_flight * second.weight:
            return second
        return first
