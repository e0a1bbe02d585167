"""maglev (LVS ``mh``): Maglev consistent hashing, a lookup table of prime size.

Each instance derives an ``offset`` and a ``skip`` from ``blake2b(id)`` and claims table slots
in the order ``offset, offset + skip, ...`` (mod the table size), taking turns with the other
instances; with unequal weights an instance takes a turn only as often as its weight allows
(Envoy's weighted Maglev), so its share of slots follows its weight. A key goes to
``table[hash % size]``: one index, O(1), and building is O(size log size), faster than a large
ring. The table size is the option ``table_size`` (a prime, default 65,537 as in Envoy); it
should be well above the number of instances (at least ~100x for an even spread), since each
instance's share is quantised to whole slots.

Consistency: when one of N instances leaves, its keys move and so do a few others (Maglev
trades some disruption for balance; Envoy says about twice ring hash's). Measured with the
default table, 4,000 keys and N = 5 to 40 equal instances: 1.0-1.1/N of the keys move in all,
under 0.5% of them from an instance that stayed; tests/schedulers/test_consistent_hash.py
bounds the collateral at 0.5/N and the total at 1.3/N. A smaller table moves more (5,003 slots
with 40 instances: about 2/N).

Building is exact and pure Python, tuned because it runs on every list change: instances of one
weight take their turns in lockstep, so turns are computed per weight, not per instance, and
chained in C; each instance's probe start and step (two blake2b halves) are carried over from
the scheduler this one replaces; the probing loop is a few operations per slot; and once only
about ``sqrt(size / 2.3)`` slots are left empty (167 of the default table), where probing
would take most of the time, each taker's next free slot is found from the empty slots instead
(its step count to each is ``(slot - position) / skip`` mod the prime size). With 10,000
instances and the default table this takes about 25 ms of CPU after a 1% change (the probing
of its 65,537 slots, one by one in the order the algorithm defines, is most of it), 30-35 ms
for a first table. The table is refilled in full rather than patched: which slots a change
moves depends on every instance's whole probe path, which would have to be kept (hundreds of
thousands of entries per table) to replay only the affected turns exactly.

No key: a uniformly random instance (``no_key_fallback``). Retries walk the table forward from
the key's slot to the first instance not excluded (slots are interleaved pseudo-randomly, so
the next slot is as good as a rehash and stays deterministic).

``mh`` is an alias: IPVS's mh hashes the client's source address; in lbclient the caller
chooses what to hash by setting the pick key (``sh`` hashes ``PickContext.source``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from hashlib import blake2b
from operator import itemgetter
from typing import Any

from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._hashing import MASK64
from lbclient.schedulers._keyed import KeyedScheduler
from lbclient.schedulers._options import prime_option

DEFAULT_TABLE_SIZE = 65537

Probe = tuple[int, int]


def endgame_size(size: int) -> int:
    """Empty slots left when filling switches from probing to searching the empty slots.

    Probing costs about ``size / empty`` steps per slot, the search ``empty`` dearer ones
    (about 2.3 probes each): they cost the same near ``sqrt(size / 2.3)``, 167 empty slots
    of the default table.
    """
    return math.isqrt(size * 3 // 7)


def probe_starts(ids: Sequence[str], size: int, known: Mapping[str, Probe]) -> dict[str, Probe]:
    """Each instance's first slot and step in a table of ``size`` (reusing ``known`` ones)."""
    found: dict[str, Probe] = {}
    for instance_id in ids:
        probe = known.get(instance_id)
        if probe is None:
            # hash128 inlined (this loop is a third of a first build): one 128-bit integer.
            digest = blake2b(instance_id.encode("utf-8", "surrogatepass"), digest_size=16)
            both = int.from_bytes(digest.digest(), "big")
            probe = ((both >> 64) % size, (both & MASK64) % (size - 1) + 1)
        found[instance_id] = probe
    return found


def take_order(weights: Sequence[float], size: int) -> Iterator[int]:
    """Instance indices in the order they take slots, endlessly (Envoy's weighted turns).

    In turn ``r`` an instance takes a slot if ``r x weight >= its target``, in index order; its
    target then grows by the largest weight, so the heaviest takes a slot every turn and one of
    a third its weight every third turn.
    """
    heaviest = max(weights)
    classes: dict[float, list[int]] = {}
    for index, weight in enumerate(weights):
        classes.setdefault(weight, []).append(index)
    if len(classes) == 1:
        return itertools.cycle(range(len(weights)))
    turns = size * heaviest / math.fsum(weights) + 1  # about how many turns fill the table
    if len(classes) * turns <= 4 * size:  # per weight per turn is cheaper than per slot
        return _turns_by_weight(classes, heaviest)
    return _turns_by_instance(weights, heaviest)


def _turns_by_weight(classes: dict[float, list[int]], heaviest: float) -> Iterator[int]:
    return itertools.chain.from_iterable(_weight_turns(classes, heaviest))


def _weight_turns(classes: dict[float, list[int]], heaviest: float) -> Iterator[list[int]]:
    # Instances of one weight have the same target at every turn: decide once per weight, and
    # hand over each turn's takers as one list (chained in C, not yielded one by one).
    targets = dict.fromkeys(classes, 0.0)
    merged: dict[tuple[float, ...], list[int]] = {}
    for turn in itertools.count(1):
        due = tuple(w for w, target in targets.items() if not turn * w < target)
        for weight in due:
            targets[weight] += heaviest
        order = merged.get(due)
        if order is None:
            order = merged[due] = sorted(itertools.chain.from_iterable(classes[w] for w in due))
        yield order


def _turns_by_instance(weights: Sequence[float], heaviest: float) -> Iterator[int]:
    # Each instance is filed under the next turn it may take a slot in.
    targets = [0.0] * len(weights)
    upcoming: dict[int, list[int]] = {1: list(range(len(weights)))}
    for turn in itertools.count(1):
        due = upcoming.pop(turn, None)
        if not due:
            continue
        due.sort()
        for index in due:
            yield index
            weight = weights[index]
            target = targets[index] = targets[index] + heaviest
            after = max(turn + 1, int(target / weight))
            while after * weight < target:
                after += 1
            while after - 1 > turn and (after - 1) * weight >= target:
                after -= 1
            upcoming.setdefault(after, []).append(index)


def maglev_table(
    ids: Sequence[str],
    weights: Sequence[float],
    size: int,
    known: Mapping[str, Probe] | None = None,
) -> list[int]:
    """Populate a Maglev lookup table: slot → index into ``ids``.

    ``known`` maps ids to their (first slot, step) in a table of this size, from a previous
    build (see ``probe_starts``); it only saves hashing.
    """
    found = probe_starts(ids, size, known or {})
    return populate([found[i] for i in ids], weights, size)


def populate(probes: Sequence[Probe], weights: Sequence[float], size: int) -> list[int]:
    """The Maglev table of the instances with these (first slot, step) and weights."""
    positions = [first for first, _ in probes]
    skips = [skip for _, skip in probes]
    table: list[int | None] = [None] * size
    order = take_order(weights, size)
    # The hot loop (tens of thousands of slots, a few probes each): ``x % size`` on small
    # ints is one operation where a compare-and-subtract is three.
    for index in itertools.islice(order, max(0, size - endgame_size(size))):
        slot = positions[index]
        if table[slot] is None:
            table[slot] = index
            positions[index] = (slot + skips[index]) % size
            continue
        skip = skips[index]
        slot = (slot + skip) % size
        while table[slot] is not None:
            slot = (slot + skip) % size
        table[slot] = index
        positions[index] = (slot + skip) % size
    # Endgame: the taker's next free slot is the empty slot fewest of its steps away (its
    # step count to each is ``(slot - position) / skip`` mod the prime size).
    empty = _empty_slots(table)
    inverses: dict[int, int] = {}
    for index in order:
        if not empty:
            break
        position = positions[index]
        inverse = inverses.get(index)
        if inverse is None:
            inverse = inverses[index] = pow(skips[index], -1, size)
        steps = [(slot - position) * inverse % size for slot in empty]
        nearest = steps.index(min(steps))
        slot = empty[nearest]
        empty[nearest] = empty[-1]
        empty.pop()
        table[slot] = index
        positions[index] = (slot + skips[index]) % size
    return table  # type: ignore[return-value]  # every slot is taken


def _empty_slots(table: list[int | None]) -> list[int]:
    """The slots still empty (None), found by ``list.index`` (a scan in C)."""
    empty: list[int] = []
    slot = -1
    with contextlib.suppress(ValueError):
        while True:
            slot = table.index(None, slot + 1)
            empty.append(slot)
    return empty


class MaglevScheduler(KeyedScheduler):
    """Maglev consistent hashing: one table lookup per pick."""

    name = "maglev"
    aliases = ("mh",)

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        table_size: int = DEFAULT_TABLE_SIZE,
        previous: Scheduler | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoints, previous=previous, **kwargs)
        self.table_size = prime_option(self.name, "table_size", table_size)
        ids = [e.id for e in self.ordered]
        known = (
            previous.probes
            if isinstance(previous, MaglevScheduler) and previous.table_size == self.table_size
            else {}
        )
        self.probes: dict[str, Probe] = probe_starts(ids, self.table_size, known)
        """id → (first slot, step), handed to the next build of the same table size."""
        weights = [e.weight for e in self.ordered]
        # ``probes`` lists the ids in order (unless an id repeats): no lookup per id.
        starts = (
            self.probes.values()
            if len(self.probes) == len(ids)
            else map(self.probes.__getitem__, ids)
        )
        indices = populate(list(starts), weights, self.table_size)
        self.table: tuple[Endpoint, ...] = itemgetter(*indices)(self.ordered)

    def choose_hash(self, key_hash: int) -> Endpoint:
        return self.table[key_hash % self.table_size]

    def walk(self, key_hash: int, exclude: frozenset[str]) -> Endpoint | None:
        table, size = self.table, self.table_size
        start = key_hash % size
        for step in range(size):
            endpoint = table[(start + step) % size]
            if endpoint.id not in exclude:
                return endpoint
        return None

    def rebuild_options(self) -> dict[str, Any]:
        return {"table_size": self.table_size}
