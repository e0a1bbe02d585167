"""rendezvous: highest random weight (HRW) hashing, weighted.

Every instance scores every key, ``score = mix64(seed(instance) ^ hash(key))``, and the key
goes to the highest score. Instance seeds (``blake2b(id)``) are computed once per list; a pick
hashes the key once and then costs O(n) integer arithmetic (about 1 us per instance in
CPython: fine for tens of instances, a poor choice for thousands, where maglev or ring_hash
pick in O(1) / O(log n)), with no table at all and the best consistency: when one of N
instances leaves, exactly its own keys (about 1/N) move, and none of the others.

Unequal weights use the logarithmic method (Schindelhauer & Schomaker, "Weighted distributed
hash tables", 2005): ``score = -weight / ln(u)`` with ``u`` the score mapped into (0, 1), which
gives each instance a share of keys proportional to its weight and keeps the 1/N property.

No key: a uniformly random instance (``no_key_fallback``). Retries take the highest-scored
instance that is not excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lbclient._endpoint import Endpoint
from lbclient.schedulers._hashing import hash64, mix64
from lbclient.schedulers._keyed import KeyedScheduler

_UNIT = 1.0 / 2.0**64


class RendezvousScheduler(KeyedScheduler):
    """Highest random weight: the instance that scores the key highest."""

    name = "rendezvous"

    def __init__(self, endpoints: Sequence[Endpoint], **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self._seeds = [hash64(e.id) for e in self.ordered]
        weights = [e.weight for e in self.ordered]
        self._weights: list[float] | None = None if len(set(weights)) == 1 else weights

    def _scores(self, key_hash: int) -> list[float]:
        if self._weights is None:
            return [float(mix64(seed ^ key_hash)) for seed in self._seeds]
        # u in (0, 1): -w / ln(u) grows with u, and its distribution gives weight-shares.
        return [
            -weight / math.log((mix64(seed ^ key_hash) + 0.5) * _UNIT)
            for seed, weight in zip(self._seeds, self._weights, strict=True)
        ]

    def choose_hash(self, key_hash: int) -> Endpoint:
        if self._weights is None:
            seeds = self._seeds
            best = max(range(len(seeds)), key=lambda i: mix64(seeds[i] ^ key_hash))
            return self.ordered[best]
        scores = self._scores(key_hash)
        return self.ordered[max(range(len(scores)), key=scores.__getitem__)]

    def walk(self, key_hash: int, exclude: frozenset[str]) -> Endpoint | None:
        scores = self._scores(key_hash)
        ranked = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
        return next((self.ordered[i] for i in ranked if self.ordered[i].id not in exclude), None)
