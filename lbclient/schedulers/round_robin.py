"""round_robin (LVS ``rr``): each instance in turn.

Starts at a random offset so that a fleet of clients does not hit the same instance first
(Spring), and with one instance does not advance at all. Lock-free: the position is an
``itertools.count``, whose ``next`` is atomic under CPython.
"""

from __future__ import annotations

import itertools
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler


class RoundRobinScheduler(Scheduler):
    """Rotate through the instances, ignoring weights and load."""

    name = "round_robin"
    uses_weights = False
    rotates = True
    aliases = ("rr",)

    def __init__(self, endpoints: Any, **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self._size = len(self.endpoints)
        self._position = itertools.count(self.rng.randrange(self._size))

    def choose(self, context: PickContext) -> Endpoint:
        if self._size == 1:
            return self.endpoints[0]
        return self.endpoints[next(self._position) % self._size]

    def pick(self, context: PickContext) -> Endpoint:
        # Scheduler.pick without its hop to choose() when nothing is excluded: round robin
        # is the default, and this runs for every request.
        if context.exclude or self._size == 1:
            return super().pick(context)
        return self.endpoints[next(self._position) % self._size]
