"""LocalityScheduler: the shared part of lblc and lblcr, a key → server(s) table with overload.

The table lives across rebuilds: a new scheduler of the same kind takes its ``previous``'s
table, so keys keep their servers when the list changes; entries naming an instance that is
gone are reassigned when next used. The table holds at most ``max_keys`` keys (option, default
65,536); beyond that the oldest assignment is forgotten. Table entries are replaced whole by a
single dict assignment, so concurrent picks never see a torn entry; two picks racing on the
same key may both reassign it, and the last write wins, which only costs locality.

Overload rule (ours, documented because IPVS's cannot be copied: it compares active
connections to an integer weight, and our weights are relative floats): an instance is
overloaded when it has at least ``overload_floor`` requests in flight (option, default 2) and
more than twice as many per unit of weight as the least loaded instance (weighted
least-connection over the whole list). A "twice its weight-share of all requests in flight"
rule was considered and rejected: with two instances it can never fire. The check asks ``wlc``
for the least loaded instance only past the floor (a scan under 64 instances, a load-index
lookup above: see ``_scan``); below the floor a pick is a dict lookup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._hashing import key_bytes
from lbclient.schedulers._keyed import random_excluding
from lbclient.schedulers._options import int_option
from lbclient.schedulers.wlc import WeightedLeastConnectionScheduler, weighted_load


class LocalityScheduler(Scheduler):
    """Base of lblc/lblcr: a key table carried across rebuilds, and the overload rule."""

    uses_key = True
    no_key_fallback: ClassVar[str] = "random"
    """A request without a key gets a uniformly random instance and is not remembered."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        previous: Scheduler | None = None,
        overload_floor: int = 2,
        max_keys: int = 65536,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoints, previous=previous, **kwargs)
        self.overload_floor = int_option(self.name, "overload_floor", overload_floor, minimum=1)
        self.max_keys = int_option(self.name, "max_keys", max_keys, minimum=1)
        self.by_id = {e.id: e for e in self.endpoints}
        self.least = WeightedLeastConnectionScheduler(self.endpoints, rng=self.rng)
        self.table: dict[bytes, Any] = previous.table if type(previous) is type(self) else {}

    def choose(self, context: PickContext) -> Endpoint:
        if context.key is None:
            return self.endpoints[int(self.rng.random() * len(self.endpoints))]
        return self.choose_key(key_bytes(context.key), context)

    def choose_key(self, key: bytes, context: PickContext) -> Endpoint:
        raise NotImplementedError

    def relief(self, endpoint: Endpoint, context: PickContext) -> Endpoint | None:
        """The least loaded instance if ``endpoint`` is overloaded, else None."""
        if endpoint.in_flight < self.overload_floor:
            return None
        least = self.least.choose(context)
        return least if 2 * weighted_load(least) < weighted_load(endpoint) else None

    def remember(self, key: bytes, entry: Any) -> None:
        table = self.table
        if key not in table and len(table) >= self.max_keys:
            # Another pick may evict or resize concurrently; the bound is then approximate.
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del table[next(iter(table))]
        table[key] = entry

    def choose_excluding(self, context: PickContext, chosen: Endpoint) -> Endpoint:
        """Retry path: the least loaded instance not excluded; the table is left alone."""
        if context.key is None:
            return random_excluding(self.endpoints, context.exclude, self.rng) or chosen
        return self.least.pick(context)

    def rebuild_options(self) -> dict[str, Any]:
        return {"overload_floor": self.overload_floor, "max_keys": self.max_keys}
