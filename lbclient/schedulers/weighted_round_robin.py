"""weighted_round_robin (LVS ``wrr``): rotation in which each instance appears by its weight.

The schedule is computed once per list by earliest-deadline-first (see ``_schedule``), so the
instances interleave smoothly, and is read through an ``itertools.count`` started at a random
offset: a pick is a counter step and an index, with no lock. When every weight is equal the
schedule is the list itself, i.e. plain round robin. Fractional or very uneven weights are
scaled to at most ``max(resolution x instances, 1024)`` slots (option ``resolution``, default
64 slots per instance), each instance keeping at least one slot.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._options import int_option
from lbclient.schedulers._schedule import weighted_schedule

MAX_RESOLUTION = 4096
"""The schedule holds up to ``resolution`` slots per instance: bounded so that a rebuild over
a thousand instances stays a few million slots."""


class WeightedRoundRobinScheduler(Scheduler):
    """Rotate through a precomputed, smoothly interleaved weighted schedule."""

    name = "weighted_round_robin"
    rotates = True
    aliases = ("wrr",)

    def __init__(
        self, endpoints: Sequence[Endpoint], *, resolution: int = 64, **kwargs: Any
    ) -> None:
        super().__init__(endpoints, **kwargs)
        self.resolution = int_option(
            self.name, "resolution", resolution, minimum=1, maximum=MAX_RESOLUTION
        )
        weights = [e.weight for e in self.endpoints]
        if len(set(weights)) == 1:
            schedule: Sequence[Endpoint] = self.endpoints
        else:
            limit = max(self.resolution * len(weights), 1024)
            schedule = [self.endpoints[i] for i in weighted_schedule(weights, limit)]
        self.schedule: tuple[Endpoint, ...] = tuple(schedule)
        self._size = len(self.schedule)
        self._position = itertools.count(self.rng.randrange(self._size))

    def choose(self, context: PickContext) -> Endpoint:
        if self._size == 1:
            return self.schedule[0]
        return self.schedule[next(self._position) % self._size]

    def rebuild_options(self) -> dict[str, Any]:
        return {"resolution": self.resolution}
