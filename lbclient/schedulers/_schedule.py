"""Weighted schedules: a fixed sequence in which each index appears in proportion to its weight.

Built once per list by earliest-deadline-first: index ``i`` with ``c_i`` slots has deadlines
``(k + 0.5) / c_i``; sorting every deadline interleaves the indices smoothly (a weight-3 and a
weight-1 instance give ``a a b a``-like runs, never ``a a a b``). Weights are floats, so they
are turned into slot counts first: exactly (divided by their gcd) when they are integers whose
sum fits ``limit``, otherwise scaled to about ``limit`` slots, each instance keeping at least
one (the error per instance is under half a slot, i.e. under 1/(2 x slots) of its share).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def slot_counts(weights: Sequence[float], limit: int) -> list[int]:
    """Integer slot counts proportional to ``weights``, summing to about ``limit`` at most."""
    if all(w == int(w) for w in weights):
        counts = [int(w) for w in weights]
        divisor = math.gcd(*counts)
        counts = [c // divisor for c in counts]
        if sum(counts) <= limit:
            return counts
    scale = limit / math.fsum(weights)
    return [max(1, round(w * scale)) for w in weights]


def weighted_schedule(weights: Sequence[float], limit: int) -> list[int]:
    """Indices into ``weights`` in EDF order, each appearing about weight-proportionally."""
    deadlines: list[tuple[float, int]] = []
    for index, count in enumerate(slot_counts(weights, limit)):
        step = 1.0 / count
        deadlines.extend(((k + 0.5) * step, index) for k in range(count))
    deadlines.sort()
    return [index for _, index in deadlines]
