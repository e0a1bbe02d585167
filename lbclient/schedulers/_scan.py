"""ScanScheduler: the LVS connection schedulers' shape, a full scan for the lowest cost.

IPVS's lc, wlc, sed and nq look at every server on every pick. So do we: O(n) per pick, which
is the price of an exact answer (``least_request`` samples instead, in O(1)). The scan is a
list comprehension of costs (with precomputed inverse weights) followed by ``min`` and
``list.index``, which run in C: about 3x cheaper than ``min(key=...)`` over the endpoints.

The scan starts at a rotating offset (an ``itertools.count``, lock-free) and keeps the first
lowest cost, so ties rotate: an idle fleet is used in turn instead of always sending to the
first instance.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler


class ScanScheduler(Scheduler):
    """Base of lc/wlc/sed/nq: the instance with the lowest cost, ties in rotation."""

    def __init__(self, endpoints: Sequence[Endpoint], **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self.inverse_weights = [1.0 / e.weight for e in self.endpoints]
        self._position = itertools.count(self.rng.randrange(len(self.endpoints)))

    def costs(self) -> list[float] | list[int]:
        """Every instance's cost (lower is better), in list order."""
        raise NotImplementedError

    def start(self) -> int:
        """Where this pick's scan starts: one further on each call."""
        return next(self._position) % len(self.endpoints)

    def lowest(self, costs: Sequence[float], start: int) -> Endpoint:
        """The first lowest cost, scanning from ``start`` round the list."""
        best = min(costs)
        try:
            return self.endpoints[costs.index(best, start)]
        except ValueError:  # the lowest ones all sit before ``start``
            return self.endpoints[costs.index(best)]

    def choose(self, context: PickContext) -> Endpoint:
        if len(self.endpoints) == 1:
            return self.endpoints[0]
        return self.lowest(self.costs(), self.start())
