"""weighted_random: a random instance per request, with probability proportional to its weight.

Cumulative weights are computed once per list; each pick is one ``random()`` and one binary
search (``bisect``), so it costs O(log n) and takes no lock. Equal weights: uniform random.
Load is ignored (see ``twos`` or ``least_request`` for load-aware weighted choices).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._weights import WeightedDraw


class WeightedRandomScheduler(Scheduler):
    """Pick at random in proportion to the instances' weights."""

    name = "weighted_random"

    def __init__(self, endpoints: Sequence[Endpoint], **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self._draw = WeightedDraw([e.weight for e in self.endpoints])

    def choose(self, context: PickContext) -> Endpoint:
        return self.endpoints[self._draw.draw(self.rng)]
