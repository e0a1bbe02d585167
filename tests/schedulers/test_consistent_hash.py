"""Consistent hashing: when one of N instances leaves, about 1/N of the keys move.

"moved" counts the keys whose instance changed; the keys of the instance that left must move,
so what we bound is the collateral: keys that moved although their instance stayed. Measured
(4,000 keys, N = 5..40, equal and mixed weights, default options):
rendezvous 0 exactly; maglev (65,537 slots) under 0.5% of keys, i.e. a total of 1.0-1.1/N for
equal weights, well inside Envoy's "about 2x"; ring_hash (Envoy's sizing: the ring stays near
min_ring_size, so survivors gain points when one leaves) up to 2.7/N over 210 random cases.
The bounds below leave room above those measurements. Statistical tests run derandomized
(hypothesis's fixed seed) so that CI is reproducible; the property itself is what is checked.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ._support import build, endpoints, key_contexts

KEYS = key_contexts(4000, "cart")
COLLATERAL_BOUND = {"rendezvous": 0.0, "maglev": 0.5, "ring_hash": 3.0}  # x 1/N
DEFAULTS = {"maglev": {"table_size": 65537}}  # the real default, not the tests' small table


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    size=st.integers(5, 40),
    data=st.data(),
    weighted=st.booleans(),
)
@pytest.mark.parametrize("name", ["rendezvous", "maglev", "ring_hash"])
def test_one_instance_leaving_moves_about_one_nth_of_keys(
    name: str, size: int, data: st.DataObject, weighted: bool
) -> None:
    weights = [1.0 + (i % 4 if weighted else 0) for i in range(size)]
    items = endpoints(weights)
    gone = items[data.draw(st.integers(0, size - 1), label="leaving")]
    before = build(name, items, **DEFAULTS.get(name, {}))
    after = build(name, [e for e in items if e is not gone], **DEFAULTS.get(name, {}))
    moved = collateral = on_gone = 0
    for context in KEYS:
        old, new = before.pick(context), after.pick(context)
        on_gone += old is gone
        if old is not new:
            moved += 1
            collateral += old is not gone
    assert moved >= on_gone  # every key of the instance that left found a new home
    assert collateral / len(KEYS) <= COLLATERAL_BOUND[name] / size + 0.002
    if not weighted:
        expected = 1 / size
        assert moved / len(KEYS) <= expected * (4.0 if name == "ring_hash" else 1.3) + 0.01
