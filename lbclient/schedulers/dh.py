"""dh (LVS destination hashing): hash of the request key → a static bucket table → instance.

Like IPVS, the key's hash picks one of ``table_size`` buckets (option, default 256 as in IPVS,
raised to the number of instances when there are more), and the buckets are dealt out to the
instances, sorted by id, in a weighted rotation (IPVS's dh ignores weights; ours honours them,
as IPVS's sh does). This is not consistent hashing: the deal is redone when the list changes,
so most keys move when an instance comes or goes. Use ``ring_hash``, ``maglev`` or
``rendezvous`` when keys must stay put; dh is for the LVS behaviour, a cheap fixed spread.

No key: a uniformly random instance (``no_key_fallback``). Retries take the next bucket whose
instance is not excluded (IPVS's fallback).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbclient._endpoint import Endpoint
from lbclient.schedulers._keyed import KeyedScheduler
from lbclient.schedulers._options import int_option
from lbclient.schedulers._schedule import weighted_schedule


class DestinationHashScheduler(KeyedScheduler):
    """Key hash modulo a weighted bucket table (IPVS dh)."""

    name = "dh"

    def __init__(self, endpoints: Sequence[Endpoint], *, table_size: int = 256, **kwargs: Any):
        super().__init__(endpoints, **kwargs)
        self.table_size = int_option(self.name, "table_size", table_size, minimum=1)
        buckets = max(self.table_size, len(self.ordered))
        weights = [e.weight for e in self.ordered]
        if len(set(weights)) == 1:
            deal = [i % len(weights) for i in range(buckets)]
        else:
            order = weighted_schedule(weights, buckets)
            deal = [order[i % len(order)] for i in range(buckets)]
        self.buckets: tuple[Endpoint, ...] = tuple(self.ordered[i] for i in deal)

    def choose_hash(self, key_hash: int) -> Endpoint:
        return self.buckets[key_hash % len(self.buckets)]

    def walk(self, key_hash: int, exclude: frozenset[str]) -> Endpoint | None:
        buckets = self.buckets
        start = key_hash % len(buckets)
        for step in range(len(buckets)):
            endpoint = buckets[(start + step) % len(buckets)]
            if endpoint.id not in exclude:
                return endpoint
        return None

    def rebuild_options(self) -> dict[str, Any]:
        return {"table_size": self.table_size}
