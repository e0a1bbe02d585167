"""Random candidate sampling for the power-of-choices schedulers (least_request, peak_ewma).

Candidates are distinct, so "two choices" over two instances always compares both. Sampling
reads only the shared ``random.Random`` (thread-safe under CPython), never a lock.
"""

from __future__ import annotations

import random


def sample_indices(size: int, count: int, rng: random.Random) -> list[int]:
    """``count`` distinct random indices below ``size``, in random order (the first drawn wins
    ties, so the order must be random too); all of them, shuffled, when ``count >= size``."""
    count = min(count, size)
    if count == 2:
        first = int(rng.random() * size)
        second = int(rng.random() * (size - 1))
        return [first, second + 1 if second >= first else second]
    return rng.sample(range(size), count)
