"""Deterministic traffic splits: a smooth weighted round robin laid out once.

nginx's smooth weighted round robin interleaves the choices (95/5 gives one "b" every 20,
never five in a row), so any window of requests is close to the split, not only the total.
The cycle is computed once, when the split is configured or the list changes; a request
only advances a shared counter (``itertools.count``: atomic under CPython, no lock).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

MAX_CYCLE = 10_000
"""The longest cycle laid out: weights are scaled down to this total when they exceed it."""


def smooth_cycle(weights: Mapping[K, int]) -> tuple[K, ...]:
    """One period of smooth weighted round robin over integer weights (zero weights skipped).

    >>> "".join(smooth_cycle({"a": 3, "b": 1}))
    'abaa'
    """
    positive = {k: w for k, w in weights.items() if w > 0}
    if not positive:
        return ()
    divisor = math.gcd(*positive.values())
    reduced = {k: w // divisor for k, w in positive.items()}
    total = sum(reduced.values())
    if total > MAX_CYCLE:
        reduced = {k: max(1, round(w * MAX_CYCLE / total)) for k, w in reduced.items()}
        total = sum(reduced.values())
    current = dict.fromkeys(reduced, 0)
    cycle = []
    for _ in range(total):
        for key, weight in reduced.items():
            current[key] += weight
        chosen = max(current, key=current.__getitem__)
        current[chosen] -= total
        cycle.append(chosen)
    return tuple(cycle)


class Rotation(Generic[K]):
    """Walks a smooth cycle, starting at a random offset (so clients do not move in step)."""

    __slots__ = ("_cycle", "_position", "_size")

    def __init__(self, cycle: Sequence[K], rng: random.Random | None = None) -> None:
        self._cycle = tuple(cycle)
        self._size = len(self._cycle)
        start = (rng or random.Random()).randrange(self._size) if self._size else 0
        self._position = itertools.count(start)

    def next(self) -> K:
        return self._cycle[next(self._position) % self._size]
