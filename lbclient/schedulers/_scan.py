"""ScanScheduler: the LVS connection schedulers' shape, the lowest cost with ties in rotation.

IPVS's lc, wlc, sed and nq look at every server on every pick and take the first lowest cost,
scanning from a rotating offset (an ``itertools.count``, lock-free), so ties rotate: an idle
fleet is used in turn instead of always sending to the first instance. We give exactly that
answer, two ways:

- under ``INDEXED_FROM`` instances, by scanning: a list comprehension of costs (with
  precomputed inverse weights) followed by ``min`` and ``list.index``, which run in C;
- from ``INDEXED_FROM`` instances on, from a ``LoadIndex`` (see ``_load_index``) that the
  endpoints keep up to date as their in-flight counts change, so a pick costs the same at
  10,000 instances as at 100. Each begin/finish of a request then pays about 1 us to
  move its instance between cost levels, which below ``INDEXED_FROM`` the scan undercuts.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._load_index import LoadIndex

INDEXED_FROM = 64
"""Lists of this many instances or more pick from a LoadIndex instead of scanning."""


def scan(
    endpoints: Sequence[Endpoint],
    inverse_weights: Sequence[float] | None,
    start: int,
    *,
    placing: int = 0,
    idle_first: bool = False,
) -> Endpoint:
    """The first endpoint of lowest cost at or after ``start``, wrapping round.

    The cost is ``in_flight`` (``inverse_weights`` None), else ``(in_flight + placing) /
    weight``; with ``idle_first`` an endpoint with nothing in flight beats any cost.
    """
    if idle_first:
        loads = [e.in_flight for e in endpoints]
        for first, stop in ((start, len(loads)), (0, start)):
            try:
                return endpoints[loads.index(0, first, stop)]
            except ValueError:
                pass
    costs: Sequence[float]
    if inverse_weights is None:
        costs = [e.in_flight for e in endpoints]
    elif placing:
        pairs = zip(endpoints, inverse_weights, strict=True)
        costs = [(e.in_flight + placing) * w for e, w in pairs]
    else:
        costs = [e.in_flight * w for e, w in zip(endpoints, inverse_weights, strict=True)]
    return endpoints[first_lowest(costs, start)]


def first_lowest(costs: Sequence[float], start: int) -> int:
    """The position of the first lowest cost at or after ``start``, wrapping round."""
    best = min(costs)
    try:
        return costs.index(best, start)
    except ValueError:  # the lowest ones all sit before ``start``
        return costs.index(best)


class ScanScheduler(Scheduler):
    """Base of lc/wlc/sed/nq: the instance with the lowest cost, ties in rotation.

    Subclasses only say what the cost is: ``weighted`` (divide by the weight), ``placing``
    (count the request being placed) and ``idle_first`` (an idle instance beats any cost).
    """

    weighted: ClassVar[bool] = True
    placing: ClassVar[int] = 0
    idle_first: ClassVar[bool] = False

    def __init__(self, endpoints: Sequence[Endpoint], **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self.inverse_weights: list[float] | None = (
            [1.0 / e.weight for e in self.endpoints] if self.weighted else None
        )
        self._position = itertools.count(self.rng.randrange(len(self.endpoints)))
        self.index: LoadIndex | None = None
        if len(self.endpoints) >= INDEXED_FROM:
            self.index = LoadIndex(
                self.endpoints,
                self.inverse_weights,
                placing=self.placing,
                idle_first=self.idle_first,
            )

    def choose(self, context: PickContext) -> Endpoint:
        endpoints = self.endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        start = next(self._position) % len(endpoints)
        if self.index is not None:
            return endpoints[self.index.lowest(start)]
        return scan(
            endpoints,
            self.inverse_weights,
            start,
            placing=self.placing,
            idle_first=self.idle_first,
        )

    def choose_excluding(self, context: PickContext, chosen: Endpoint) -> Endpoint:
        """Retry path: what a fresh scheduler over the endpoints left would pick (its random
        start included), by a plain scan rather than building an index for one pick."""
        remaining = [e for e in self.endpoints if e.id not in context.exclude]
        if not remaining:
            return chosen
        start = self.rng.randrange(len(remaining))
        if len(remaining) == 1:
            return remaining[0]
        inverse = [1.0 / e.weight for e in remaining] if self.weighted else None
        return scan(remaining, inverse, start, placing=self.placing, idle_first=self.idle_first)
