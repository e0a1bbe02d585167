"""ovf (LVS weighted overflow): the heaviest instance until it is full, then the next.

An instance is full when its requests in flight reach ``weight x capacity`` (option
``capacity``, default 1.0: as in IPVS, the weight is the number of concurrent requests an
instance takes before traffic overflows to the next). Instances are tried by descending
weight, ties by id, so every client overflows in the same order. If every instance is full
(IPVS would refuse the connection), the one with the fewest in flight per unit of weight is
used: a client-side balancer queues rather than fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._options import float_option
from lbclient.schedulers.wlc import weighted_load


class OverflowScheduler(Scheduler):
    """Fill the heaviest instance up to its weight, then overflow to the next."""

    name = "ovf"

    def __init__(
        self, endpoints: Sequence[Endpoint], *, capacity: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(endpoints, **kwargs)
        self.capacity = float_option(self.name, "capacity", capacity, minimum=1e-9)
        ordered = sorted(self.endpoints, key=lambda e: (-e.weight, e.id))
        self.order: tuple[tuple[Endpoint, float], ...] = tuple(
            (e, e.weight * self.capacity) for e in ordered
        )

    def choose(self, context: PickContext) -> Endpoint:
        for endpoint, limit in self.order:
            if endpoint.in_flight < limit:
                return endpoint
        return min(self.endpoints, key=weighted_load)

    def rebuild_options(self) -> dict[str, Any]:
        return {"capacity": self.capacity}
