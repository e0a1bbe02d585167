"""random: a uniformly random instance per request, ignoring weights and load."""

from __future__ import annotations

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler


class RandomScheduler(Scheduler):
    """Pick uniformly at random (Spring's RandomLoadBalancer)."""

    name = "random"
    uses_weights = False

    def choose(self, context: PickContext) -> Endpoint:
        return self.endpoints[int(self.rng.random() * len(self.endpoints))]
