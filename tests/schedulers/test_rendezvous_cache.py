"""rendezvous remembers recent keys: a cached answer is always the one a full scoring gives."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbclient import ConfigurationError, PickContext
from lbclient.schedulers._hashing import hash64, mix64
from lbclient.schedulers.rendezvous import RendezvousScheduler, mix_all

from ._support import build, endpoints


@settings(max_examples=30, deadline=None)
@given(
    weights=st.lists(st.sampled_from([1.0, 1.0, 2.0, 5.0]), min_size=1, max_size=40),
    keys=st.lists(st.text(max_size=6) | st.binary(max_size=6), min_size=1, max_size=60),
    cache_size=st.integers(0, 8),
)
def test_cached_picks_are_the_highest_scored_instance(
    weights: list[float], keys: list[str | bytes], cache_size: int
) -> None:
    items = endpoints(weights)
    scheduler = build("rendezvous", items, cache_size=cache_size)
    assert isinstance(scheduler, RendezvousScheduler)
    ordered = sorted(items, key=lambda e: e.id)
    for key in keys + keys[::-1]:  # repeats: hits, and misses after evictions
        key_hash = hash64(key)
        if len(set(weights)) == 1:
            scores = [float(mix64(hash64(e.id) ^ key_hash)) for e in ordered]
        else:
            scores = [
                -e.weight / math.log((mix64(hash64(e.id) ^ key_hash) + 0.5) / 2**64)
                for e in ordered
            ]
        expected = ordered[max(range(len(ordered)), key=scores.__getitem__)]
        assert scheduler.pick(PickContext(key=key)) is expected


def test_mix_all_is_mix64_of_each_seed() -> None:
    seeds = [hash64(str(n)) for n in range(50)]
    key_hash = hash64("k")
    assert mix_all(seeds, key_hash) == [mix64(seed ^ key_hash) for seed in seeds]


def test_unhashable_keys_are_scored_without_the_cache() -> None:
    scheduler = build("rendezvous", endpoints([1.0] * 5))
    by_bytes = scheduler.pick(PickContext(key=b"abc"))
    assert scheduler.pick(PickContext(key=bytearray(b"abc"))) is by_bytes  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 1.5, True, "64"])
def test_cache_size_must_be_a_count(value: object) -> None:
    with pytest.raises(ConfigurationError, match="cache_size"):
        build("rendezvous", endpoints([1.0] * 3), cache_size=value)
