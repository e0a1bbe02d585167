"""lblcr (LVS locality-based least-connection with replication): a server set per key.

Each key maps to a set of instances, remembered across list changes like ``lblc``. A request
goes to the least loaded member (weighted least-connection). When that member is overloaded
(see ``_locality``), the least loaded instance of the whole list joins the set and takes the
request, so a hot key spreads over more servers. When a set of two or more has not changed
for ``prune_after`` seconds (option, default 300; IPVS uses 24 h), its most loaded member
leaves it, so sets shrink back when the heat is gone. Members that left the list are dropped.

No key: a uniformly random instance (``no_key_fallback``), not remembered. Other options:
``overload_floor`` (2), ``max_keys`` (65,536).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._hashing import key_bytes
from lbclient.schedulers._locality import LocalityScheduler
from lbclient.schedulers._options import float_option
from lbclient.schedulers.wlc import weighted_load


class ReplicatedLocalityScheduler(LocalityScheduler):
    """Key → a server set, grown under overload, pruned when unchanged for a while."""

    name = "lblcr"

    def __init__(
        self, endpoints: Sequence[Endpoint], *, prune_after: float = 300.0, **kwargs: Any
    ) -> None:
        super().__init__(endpoints, **kwargs)
        self.prune_after = float_option(self.name, "prune_after", prune_after)

    def choose_key(self, key: bytes, context: PickContext) -> Endpoint:
        now = time.monotonic()
        entry: tuple[tuple[str, ...], float] | None = self.table.get(key)
        members = [self.by_id[i] for i in entry[0] if i in self.by_id] if entry else []
        if not members:
            chosen = self.least.choose(context)
            self.remember(key, ((chosen.id,), now))
            return chosen
        assert entry is not None
        changed = len(members) != len(entry[0])
        stamp = entry[1]
        if len(members) > 1 and now - stamp >= self.prune_after:
            members.remove(max(members, key=weighted_load))
            changed, stamp = True, now
        chosen = min(members, key=weighted_load)
        better = self.relief(chosen, context)
        if better is not None and better not in members:
            members.append(better)
            chosen, changed, stamp = better, True, now
        if changed:
            self.remember(key, (tuple(e.id for e in members), stamp))
        return chosen

    def members(self, key: str | bytes) -> list[str]:
        """The ids in ``key``'s server set (for stats and tests)."""
        entry = self.table.get(key_bytes(key))
        return [i for i in entry[0] if i in self.by_id] if entry else []

    def rebuild_options(self) -> dict[str, Any]:
        return {**super().rebuild_options(), "prune_after": self.prune_after}
