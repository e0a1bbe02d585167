"""WeightedDraw: draw an index with probability proportional to its weight, in O(log n).

Cumulative weights are computed once per list; a draw is one ``random()`` and one ``bisect``.
Equal weights skip the bisect. Shared by weighted_random, twos and least_request.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from collections.abc import Sequence


class WeightedDraw:
    """Weight-proportional index draws over a fixed list of weights."""

    __slots__ = ("cumulative", "equal", "size", "total")

    def __init__(self, weights: Sequence[float]) -> None:
        self.size = len(weights)
        self.equal = len(set(weights)) <= 1
        self.cumulative = list(itertools.accumulate(weights))
        self.total = self.cumulative[-1] if self.cumulative else 0.0

    def draw(self, rng: random.Random) -> int:
        if self.equal:
            return int(rng.random() * self.size)
        # min() guards the float edge where random() * total rounds up to the last bound.
        return min(bisect_right(self.cumulative, rng.random() * self.total), self.size - 1)
