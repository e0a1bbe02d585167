"""LoadIndex: the LVS full scans' answer without the scan, kept up to date as loads change.

``lc``, ``wlc``, ``sed`` and ``nq`` want the first instance of lowest cost at or after a
rotating start (ties rotate). Scanning every endpoint on every pick is O(n); this index gets
the same answer from a structure updated on each in-flight change instead:

- instances are grouped by cost into *levels* (one per distinct cost value; the cost is
  computed by the same float expression as the scan, so ties are the scan's ties exactly);
- the lowest level is the top of a heap of costs (lazily cleaned: an emptied level stays in
  the heap until it surfaces, and the heap is rebuilt if stale entries pile up);
- each level is an ``IndexSet``: a bitmap in 64-bit words plus a summary bit per non-empty
  word, whose cyclic successor ("the first member at or after ``start``") takes a few integer
  operations.

A pick is therefore a heap peek and one successor query, O(1) in practice (the summary is an
``n / 64``-bit integer: 157 bits at 10,000 instances). An in-flight change moves one instance
between two levels, O(1), plus O(log levels) when a new cost level appears. Changes arrive
through ``Endpoint.watch`` under the endpoint's lock; the index has its own lock, taken inside
the endpoint's (never the other way round), so picks and changes never see a half-moved entry.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from heapq import heapify, heappop, heappush

from lbclient._endpoint import Endpoint

Cost = int | float


class IndexSet:
    """A set of non-negative integers with an O(1) cyclic successor query."""

    __slots__ = ("size", "summary", "words")

    def __init__(self, members: Iterable[int] = ()) -> None:
        self.words: dict[int, int] = {}
        """Word number → 64-bit bitmap of members ``64 x word .. 64 x word + 63`` (non-zero)."""
        self.summary = 0
        """Bit ``b`` is set when word ``b`` has a member."""
        self.size = 0
        words = self.words
        for member in members:  # distinct members
            block = member >> 6
            words[block] = words.get(block, 0) | 1 << (member & 63)
            self.size += 1
        for block in words:
            self.summary |= 1 << block

    def __contains__(self, member: int) -> bool:
        return bool(self.words.get(member >> 6, 0) >> (member & 63) & 1)

    def add(self, member: int) -> None:
        """Insert ``member`` (must be absent)."""
        block = member >> 6
        word = self.words.get(block, 0)
        if not word:
            self.summary |= 1 << block
        self.words[block] = word | 1 << (member & 63)
        self.size += 1

    def remove(self, member: int) -> None:
        """Delete ``member`` (must be present)."""
        block = member >> 6
        word = self.words[block] & ~(1 << (member & 63))
        if word:
            self.words[block] = word
        else:
            del self.words[block]
            self.summary &= ~(1 << block)
        self.size -= 1

    def successor(self, start: int) -> int:
        """The smallest member ``>= start``, or the smallest member if none is (non-empty set)."""
        block = start >> 6
        word = self.words.get(block, 0) >> (start & 63)
        if word:
            return start + (word & -word).bit_length() - 1
        rest = self.summary >> (block + 1)
        if rest:
            block += (rest & -rest).bit_length()
        else:
            block = (self.summary & -self.summary).bit_length() - 1
        word = self.words[block]
        return (block << 6) + (word & -word).bit_length() - 1


def _group(costs: list[Cost]) -> Iterable[tuple[Cost, list[int]]]:
    """Each distinct cost and the indices that have it, ascending. A fresh list has few
    distinct costs (most instances idle), so one scan per cost beats filing each index."""
    distinct = set(costs)
    if len(distinct) <= 4:
        return [(cost, [i for i, c in enumerate(costs) if c == cost]) for cost in sorted(distinct)]
    members: dict[Cost, list[int]] = {}
    for index, cost in enumerate(costs):
        members.setdefault(cost, []).append(index)
    return members.items()


def _index_set(indices: list[int]) -> IndexSet:
    """An IndexSet of ascending ``indices``; ``0 .. n - 1`` (a whole idle list) word by word."""
    if not indices or indices[-1] != len(indices) - 1:
        return IndexSet(indices)
    full = IndexSet()
    whole, rest = divmod(len(indices), 64)
    full.words = dict.fromkeys(range(whole), (1 << 64) - 1)
    if rest:
        full.words[whole] = (1 << rest) - 1
    full.summary = (1 << len(full.words)) - 1
    full.size = len(indices)
    return full


class LoadIndex:
    """Endpoints grouped by cost ``(in_flight + placing) x inverse_weight`` (``in_flight`` alone
    when ``inverse`` is None), answering "first lowest cost at or after ``start``".

    With ``idle_first`` (``nq``) an instance with nothing in flight beats any cost.
    """

    __slots__ = (
        "__weakref__",
        "_costs",
        "_heap",
        "_in_heap",
        "_inverse",
        "_levels",
        "_lock",
        "_placing",
        "_ready",
        "idle",
    )

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        inverse: Sequence[float] | None,
        *,
        placing: int = 0,
        idle_first: bool = False,
    ) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._inverse = None if inverse is None else list(inverse)
        self._placing = placing
        self.idle: IndexSet | None = IndexSet() if idle_first else None
        # Register first, read the loads second: a change in between is either in the read or
        # reported to ``moved`` after it (which waits for the lock taken below).
        watcher = weakref.ref(self)
        for index, endpoint in enumerate(endpoints):
            endpoint.watch(watcher, index)
        with self._lock:
            loads = [e.in_flight for e in endpoints]
            self._costs: list[Cost] = self._all_costs(loads)
            self._levels = {cost: _index_set(indices) for cost, indices in _group(self._costs)}
            if self.idle is not None:
                self.idle = IndexSet(i for i, load in enumerate(loads) if load == 0)
            self._heap: list[Cost] = list(self._levels)
            heapify(self._heap)
            self._in_heap = set(self._heap)
            self._ready = True

    def _all_costs(self, loads: list[int]) -> list[Cost]:
        # ``_cost`` for every endpoint at once (the same expressions, so the same floats).
        inverse, placing = self._inverse, self._placing
        if inverse is None:
            return list(loads)
        if placing:
            return [(load + placing) * w for load, w in zip(loads, inverse, strict=True)]
        return [load * w for load, w in zip(loads, inverse, strict=True)]

    def _cost(self, index: int, in_flight: int) -> Cost:
        # The scan's own expressions (ScanScheduler.costs), so equal costs are equal floats.
        if self._inverse is None:
            return in_flight
        if self._placing:
            return (in_flight + self._placing) * self._inverse[index]
        return in_flight * self._inverse[index]

    def moved(self, index: int, in_flight: int) -> None:
        """Endpoint ``index`` now has ``in_flight`` requests in flight (Endpoint.watch)."""
        with self._lock:
            if not self._ready:  # the set-up's read of in_flight will see this change
                return
            if self.idle is not None:
                if in_flight == 0:
                    if index not in self.idle:
                        self.idle.add(index)
                elif index in self.idle:
                    self.idle.remove(index)
            old = self._costs[index]
            new = self._cost(index, in_flight)
            if new == old:
                return
            self._costs[index] = new
            levels = self._levels
            leaving = levels[old]
            leaving.remove(index)
            if not leaving.size:
                del levels[old]
            level = levels.get(new)
            if level is None:
                level = levels[new] = IndexSet()
                if new not in self._in_heap:
                    if len(self._heap) > 2 * len(levels) + 64:
                        self._heap = list(levels)
                        heapify(self._heap)
                        self._in_heap = set(self._heap)
                    else:
                        heappush(self._heap, new)
                        self._in_heap.add(new)
            level.add(index)

    def lowest(self, start: int) -> int:
        """The first index of lowest cost at or after ``start``, wrapping round (an idle one
        first with ``idle_first``)."""
        with self._lock:
            idle = self.idle
            if idle is not None and idle.size:
                return idle.successor(start)
            heap, levels = self._heap, self._levels
            while True:
                level = levels.get(heap[0])
                if level is not None:
                    return level.successor(start)
                self._in_heap.discard(heappop(heap))

    def loads_by_cost(self) -> dict[Cost, list[int]]:
        """Cost → sorted member indices (for tests: the index must agree with the endpoints)."""
        with self._lock:
            return {
                cost: sorted(i for i in range(len(self._costs)) if i in level)
                for cost, level in self._levels.items()
            }
