"""fo (LVS weighted failover): always the highest-weight instance available.

All traffic goes to one instance, the heaviest in the usable list; when it leaves the list
(unhealthy, ejected, deregistered), the next heaviest takes over. Ties are broken by instance
id, so every client fails over to the same instance. The order is computed once per list, a
pick is an index; retries walk down the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler


class FailoverScheduler(Scheduler):
    """The heaviest usable instance; the next heaviest when it is excluded."""

    name = "fo"

    def __init__(self, endpoints: Sequence[Endpoint], **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self.order: tuple[Endpoint, ...] = tuple(
            sorted(self.endpoints, key=lambda e: (-e.weight, e.id))
        )

    def choose(self, context: PickContext) -> Endpoint:
        return self.order[0]

    def choose_excluding(self, context: PickContext, chosen: Endpoint) -> Endpoint:
        exclude = context.exclude
        return next((e for e in self.order if e.id not in exclude), chosen)
