"""ScanScheduler: the LVS connection schedulers' shape, a full scan for the lowest cost.

IPVS's lc, wlc, sed and nq look at every server on every pick. So do we: O(n) per pick, which
is the price of an exact answer (``least_request`` samples instead, in O(1)). The scan starts
at a rotating offset (an ``itertools.count``, lock-free) and keeps the first lowest cost, so
ties rotate: an idle fleet is used in turn instead of always sending to the first instance.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler


class ScanScheduler(Scheduler):
    """Base of lc/wlc/sed/nq: the instance with the lowest ``cost``, ties in rotation."""

    def __init__(self, endpoints: Sequence[Endpoint], **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self._position = itertools.count(self.rng.randrange(len(self.endpoints)))

    @staticmethod
    def cost(endpoint: Endpoint) -> float:
        """The load to minimise (lower is better)."""
        raise NotImplementedError

    def rotation(self) -> Iterator[Endpoint]:
        """Every instance once, starting one further on each call."""
        endpoints = self.endpoints
        start = next(self._position) % len(endpoints)
        return itertools.chain(endpoints[start:], endpoints[:start])

    def choose(self, context: PickContext) -> Endpoint:
        if len(self.endpoints) == 1:
            return self.endpoints[0]
        return min(self.rotation(), key=self.cost)
