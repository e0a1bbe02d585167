"""lblc (LVS locality-based least-connection): a key stays on its server unless overloaded.

The first request with a key goes to the least loaded instance (weighted least-connection) and
the key → instance assignment is remembered, across list changes too (the table is handed to
the rebuilt scheduler through ``previous``). Later requests with the key go to the same
instance, which keeps caches warm, until either the instance is gone from the list or it is
overloaded (see ``_locality``: at least ``overload_floor`` in flight and over twice the load
per weight of the least loaded instance); then the key moves to the least loaded instance.

No key: a uniformly random instance (``no_key_fallback``), not remembered. Options:
``overload_floor`` (2), ``max_keys`` (65,536).
"""

from __future__ import annotations

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._locality import LocalityScheduler


class LocalityLeastConnectionScheduler(LocalityScheduler):
    """Key → one remembered server; moved when it is gone or overloaded."""

    name = "lblc"

    def choose_key(self, key: bytes, context: PickContext) -> Endpoint:
        assigned = self.by_id.get(self.table.get(key, ""))
        if assigned is not None:
            better = self.relief(assigned, context)
            if better is None:
                return assigned
            assigned = better
        else:
            assigned = self.least.choose(context)
        self.remember(key, assigned.id)
        return assigned
