"""ring_hash: consistent hashing on a ketama-style ring (Envoy's ring hash, gRFC A42).

Each instance owns points on a 64-bit ring, ``blake2b("<id>_<n>")`` for n = 0, 1, ...; a key
goes to the owner of the first point at or after the key's hash (binary search, O(log ring)).
The ring size follows Envoy: the lightest instance gets about ``min_ring_size x its weight
share`` points, never less than one, others in proportion to their weight, and the ring never
exceeds ``max_ring_size`` (options: ``min_ring_size`` 1,024 as in Envoy; ``max_ring_size``
65,536, or ``min_ring_size`` if larger, where Envoy allows 8,388,608: a ring that size takes
seconds to build in Python, and one is built on every list change). When one of N
instances leaves, its keys (about 1/N) move, and because Envoy's sizing keeps the ring near
``min_ring_size``, the survivors gain points and take some keys from each other too: over 210
random cases with N = 5 to 40 (equal and 1-4 weights), up to 2.7/N of the keys moved between
instances that stayed (test_consistent_hash.py bounds that at 3/N). ``rendezvous`` moves
exactly the leaver's keys; ``maglev`` about 1.1/N in all.

Building is tuned because it runs on every list change: each instance's point hashes are carried
over from the scheduler this one replaces (a list change rehashes only the newcomers); when
fewer than 1/8 of the instances changed, the previous ring minus the leavers' points, with the
newcomers' sorted points slotted in, is the new ring (the same ring, point for point), else the
ring is sorted as plain integers with owners looked up afterwards (tuples sort about 3x slower).
With 10,000 instances a rebuild after 1% churn takes about 5-7 ms of CPU, a first build 20-40.

No key: a uniformly random instance (``no_key_fallback``). Retries walk the ring clockwise to
the next point whose owner is not excluded, as Envoy does.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from hashlib import blake2b
from operator import itemgetter
from typing import Any

from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._keyed import KeyedScheduler
from lbclient.schedulers._options import int_option

DEFAULT_MAX_RING_SIZE = 65536

MAX_RING_SIZE = 1 << 18
"""The largest ring either option accepts: a ring is rebuilt at every change of the list, at
several microseconds per point in Python (Envoy allows 8M points in C++)."""


class RingHashScheduler(KeyedScheduler):
    """Ketama consistent hashing: the key's hash, clockwise to the next instance point."""

    name = "ring_hash"

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        min_ring_size: int = 1024,
        max_ring_size: int | None = None,
        previous: Scheduler | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoints, previous=previous, **kwargs)
        self.min_ring_size = int_option(
            self.name, "min_ring_size", min_ring_size, minimum=1, maximum=MAX_RING_SIZE
        )
        if max_ring_size is None:
            max_ring_size = max(DEFAULT_MAX_RING_SIZE, self.min_ring_size)
        self.max_ring_size = int_option(
            self.name,
            "max_ring_size",
            max_ring_size,
            minimum=self.min_ring_size,
            maximum=MAX_RING_SIZE,
        )
        known = previous.points if isinstance(previous, RingHashScheduler) else {}
        self.points: dict[str, list[int]] = {}
        """id → the hashes of its points, in order (handed to the next build)."""
        for endpoint, count in zip(self.ordered, self._counts(), strict=True):
            have = known.get(endpoint.id)
            # Lists are never changed once built, so an unchanged one is shared, not copied.
            self.points[endpoint.id] = (
                have
                if have is not None and len(have) == count
                else point_hashes(endpoint.id, count, known)
            )
        merged = None
        if isinstance(previous, RingHashScheduler):
            merged = merged_ring(previous, self.ordered, self.points)
        self._hashes, self._owners = merged or ring(self.ordered, self.points)

    def _counts(self) -> list[int]:
        weights = [e.weight for e in self.ordered]
        total = math.fsum(weights)
        smallest = min(weights) / total  # the smallest share (division keeps the order)
        scale = min(math.ceil(smallest * self.min_ring_size) / smallest, self.max_ring_size)
        # Each instance's count is rounded on its own (Envoy accumulates targets across
        # instances, so one leaving shifts its neighbours' counts and moves their keys); an
        # instance's count depends only on its weight, so it is computed once per weight.
        by_weight = {w: max(1, round(scale * (w / total))) for w in set(weights)}
        return list(map(by_weight.__getitem__, weights))

    @property
    def ring_size(self) -> int:
        return len(self._hashes)

    def choose_hash(self, key_hash: int) -> Endpoint:
        position = bisect_left(self._hashes, key_hash)
        return self._owners[position if position < len(self._owners) else 0]

    def walk(self, key_hash: int, exclude: frozenset[str]) -> Endpoint | None:
        owners = self._owners
        size = len(owners)
        start = bisect_left(self._hashes, key_hash)
        for step in range(size):
            owner = owners[(start + step) % size]
            if owner.id not in exclude:
                return owner
        return None

    def rebuild_options(self) -> dict[str, Any]:
        return {"min_ring_size": self.min_ring_size, "max_ring_size": self.max_ring_size}


def point_hashes(instance_id: str, count: int, known: Mapping[str, list[int]]) -> list[int]:
    """``hash64(f"{instance_id}_{n}")`` for n < count, reusing the ones in ``known``."""
    have = known.get(instance_id, [])
    if len(have) >= count:
        return have[:count]
    names = (f"{instance_id}_{n}".encode("utf-8", "surrogatepass") for n in range(len(have), count))
    # hash64 inlined: this is most of a first build.
    return have + [int.from_bytes(blake2b(n, digest_size=8).digest(), "big") for n in names]


MERGE_BELOW = 8
"""A ring is merged into the previous one when fewer than 1/8 of its instances changed."""


def merged_ring(
    previous: RingHashScheduler, ordered: Sequence[Endpoint], points: Mapping[str, list[int]]
) -> tuple[list[int], list[Endpoint]] | None:
    """The ring of ``ordered``, made from the previous one when few instances changed: its
    points minus the leavers' (and those of instances whose points or endpoint changed), with
    the newcomers' sorted points slotted in. That is the ring ``ring`` builds, point for point;
    None (build it whole) when many changed or a newcomer's point equals another point, whose
    order then depends on the instances' indices."""
    before = {e.id: e for e in previous.ordered}
    if len(before) != len(previous.ordered) or len(points) != len(ordered):
        return None  # repeated ids: leave them to ``ring``
    old_points = previous.points
    arriving: list[Endpoint] = []
    leaving: list[Endpoint] = []
    for endpoint in ordered:
        was = before.pop(endpoint.id, None)
        if was is not endpoint or points[endpoint.id] is not old_points[endpoint.id]:
            arriving.append(endpoint)
            if was is not None:
                leaving.append(was)
    leaving += before.values()  # what is left in ``before`` is gone
    if (len(arriving) + len(leaving)) * MERGE_BELOW > len(ordered):
        return None
    hashes, owners = previous._hashes, previous._owners
    if leaving:
        gone = set(leaving)
        keep = [owner not in gone for owner in owners]
        hashes = list(itertools.compress(hashes, keep))
        owners = list(itertools.compress(owners, keep))
    if not arriving:
        return hashes, owners
    newcomers = sorted(((p, e) for e in arriving for p in points[e.id]), key=itemgetter(0))
    out_hashes: list[int] = []
    out_owners: list[Endpoint] = []
    start = 0
    last = None
    for point, owner in newcomers:
        at = bisect_left(hashes, point, start)
        if point == last or (at < len(hashes) and hashes[at] == point):
            return None  # equal hashes: ``ring`` orders them by index
        out_hashes += hashes[start:at]
        out_owners += owners[start:at]
        out_hashes.append(point)
        out_owners.append(owner)
        start, last = at, point
    out_hashes += hashes[start:]
    out_owners += owners[start:]
    return out_hashes, out_owners


def ring(
    ordered: Sequence[Endpoint], points: Mapping[str, list[int]]
) -> tuple[list[int], list[Endpoint]]:
    """The sorted point hashes and each point's owner; equal hashes go to the lower index,
    first (the order of sorting ``(hash, index)`` pairs)."""
    hashes = sorted(itertools.chain.from_iterable(points[e.id] for e in ordered))
    # The lowest index writes last, and wins.
    owner_of = {point: e for e in reversed(ordered) for point in points[e.id]}
    if len(owner_of) == len(hashes):
        return hashes, list(map(owner_of.__getitem__, hashes))
    # Two points share a hash (64 bits: practically never): sort the pairs themselves.
    pairs = sorted((point, index) for index, e in enumerate(ordered) for point in points[e.id])
    return [point for point, _ in pairs], [ordered[index] for _, index in pairs]
