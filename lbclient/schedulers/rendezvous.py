"""rendezvous: highest random weight (HRW) hashing, weighted.

Every instance scores every key, ``score = mix64(seed(instance) ^ hash(key))``, and the key
goes to the highest score. Instance seeds (``blake2b(id)``) are computed once per list; a pick
hashes the key once and then costs O(n) integer arithmetic (about 0.2-0.5 us per instance in
CPython: fine for tens of instances, slow for thousands, where maglev or ring_hash pick in
O(1) / O(log n)), with no table at all and the best consistency: when one of N instances
leaves, exactly its own keys (about 1/N) move, and none of the others.

Keys usually repeat (a user, a session, a tenant), so each scheduler remembers the answer for
its ``cache_size`` most recently used keys (option, default 4,096; 0 turns it off): a repeated
key costs one LRU lookup, whatever the list size. The cache belongs to the list it was built
over (a new list builds a new scheduler and an empty cache), so it never changes an answer.

Unequal weights use the logarithmic method (Schindelhauer & Schomaker, "Weighted distributed
hash tables", 2005): ``score = -weight / ln(u)`` with ``u`` the score mapped into (0, 1), which
gives each instance a share of keys proportional to its weight and keeps the 1/N property.

No key: a uniformly random instance (``no_key_fallback``). Retries take the highest-scored
instance that is not excluded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._hashing import MASK64, hash64
from lbclient.schedulers._keyed import KeyedScheduler
from lbclient.schedulers._options import int_option

_UNIT = 1.0 / 2.0**64


class RendezvousScheduler(KeyedScheduler):
    """Highest random weight: the instance that scores the key highest."""

    name = "rendezvous"

    def __init__(
        self, endpoints: Sequence[Endpoint], *, cache_size: int = 4096, **kwargs: Any
    ) -> None:
        super().__init__(endpoints, **kwargs)
        self.cache_size = int_option(self.name, "cache_size", cache_size, minimum=0)
        self._seeds = [hash64(e.id) for e in self.ordered]
        weights = [e.weight for e in self.ordered]
        self._weights: list[float] | None = None if len(set(weights)) == 1 else weights
        ordered, seeds, weighted = self.ordered, self._seeds, self._weights

        def choose_key(key: str | bytes) -> Endpoint:
            return highest(ordered, seeds, weighted, hash64(key))

        # The cached function holds the list, not the scheduler (no reference cycle).
        self._choose_key: Callable[[str | bytes], Endpoint] = (
            functools.lru_cache(maxsize=self.cache_size)(choose_key)
            if self.cache_size
            else choose_key
        )

    def choose(self, context: PickContext) -> Endpoint:
        key = context.key
        if key is None:
            return self.endpoints[int(self.rng.random() * len(self.endpoints))]
        try:
            return self._choose_key(key)
        except TypeError:  # an unhashable key (a bytearray): no caching
            return self.choose_hash(hash64(key))

    def choose_hash(self, key_hash: int) -> Endpoint:
        return highest(self.ordered, self._seeds, self._weights, key_hash)

    def walk(self, key_hash: int, exclude: frozenset[str]) -> Endpoint | None:
        scores = scores_of(self._seeds, self._weights, key_hash)
        ranked = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
        return next((self.ordered[i] for i in ranked if self.ordered[i].id not in exclude), None)

    def rebuild_options(self) -> dict[str, Any]:
        return {"cache_size": self.cache_size}


def mix_all(seeds: Sequence[int], key_hash: int) -> list[int]:
    """``mix64(seed ^ key_hash)`` for every seed (mix64 inlined: this loop is the whole pick)."""
    mixed: list[int] = []
    append = mixed.append
    for seed in seeds:
        z = seed ^ key_hash
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        append(z ^ (z >> 31))
    return mixed


def scores_of(seeds: Sequence[int], weights: Sequence[float] | None, key_hash: int) -> list[float]:
    """Every instance's score for the key (``weights`` None: all equal)."""
    mixed = mix_all(seeds, key_hash)
    if weights is None:
        return [float(z) for z in mixed]
    # u in (0, 1): -w / ln(u) grows with u, and its distribution gives weight-shares.
    log = math.log
    return [-weight / log((z + 0.5) * _UNIT) for z, weight in zip(mixed, weights, strict=True)]


def highest(
    ordered: Sequence[Endpoint],
    seeds: Sequence[int],
    weights: Sequence[float] | None,
    key_hash: int,
) -> Endpoint:
    """The endpoint scoring the key highest (the first of equals, in id order)."""
    scores: Sequence[float] = (
        mix_all(seeds, key_hash) if weights is None else scores_of(seeds, weights, key_hash)
    )
    return ordered[scores.index(max(scores))]
