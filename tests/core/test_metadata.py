"""An instance's metadata: a read-only mapping that behaves as the MappingProxyType it
replaces (equality, repr, lookups), costs only its values per instance, and can be pickled."""

from __future__ import annotations

import copy
import pickle
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbclient import ServiceInstance
from lbclient._metadata import FrozenMetadata

ITEMS = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=8)


@settings(max_examples=200, deadline=None)
@given(items=ITEMS, other=ITEMS, probe=st.text(max_size=8))
def test_behaves_as_a_mappingproxy(
    items: dict[str, str], other: dict[str, str], probe: str
) -> None:
    meta, proxy = FrozenMetadata(items), MappingProxyType(dict(items))
    assert list(meta.items()) == list(proxy.items())
    assert list(reversed(meta)) == list(reversed(proxy))
    assert len(meta) == len(proxy)
    assert repr(meta) == repr(proxy)
    assert meta == proxy == items
    assert proxy == meta
    assert items == meta
    assert (meta == other) == (items == other)
    assert (meta != other) == (items != other)
    assert (meta == FrozenMetadata(other)) == (items == other)
    assert (probe in meta) == (probe in proxy)
    assert meta.get(probe, "absent") == proxy.get(probe, "absent")
    assert meta.copy() == proxy.copy()
    assert type(meta.copy()) is dict
    assert meta | other == proxy | other
    assert other | meta == other | proxy
    if probe in items:
        assert meta[probe] == items[probe]
    else:
        with pytest.raises(KeyError):
            meta[probe]


def test_read_only_and_unhashable() -> None:
    meta = ServiceInstance("orders", "h", 1, metadata={"version": "2"}).metadata
    with pytest.raises(TypeError):
        meta["version"] = "3"  # type: ignore[index]
    with pytest.raises(AttributeError):
        meta._values = ("3",)  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(meta)
    assert meta != ["version"]


def test_a_mapping_given_is_copied() -> None:
    source = {"version": "2"}
    instance = ServiceInstance("orders", "h", 1, metadata=MappingProxyType(source))
    source["version"] = "3"
    assert instance.metadata == {"version": "2"}


def test_instances_keep_repr_equality_and_can_be_pickled() -> None:
    instance = ServiceInstance("orders", "h", 1, metadata={"b": "2", "a": "1"})
    assert repr(instance).endswith(
        "metadata=mappingproxy({'b': '2', 'a': '1'}), scheme=None, priority=0)"
    )
    assert instance == ServiceInstance("orders", "h", 1, metadata={"a": "1", "b": "2"})
    assert instance != ServiceInstance("orders", "h", 1, metadata={"a": "1"})
    for twin in (pickle.loads(pickle.dumps(instance)), copy.deepcopy(instance)):
        assert twin == instance
        assert list(twin.metadata) == ["b", "a"]
    assert ServiceInstance("orders", "h", 1).metadata == {}


def test_equal_keys_are_stored_once() -> None:
    """100,000 instances with the same keys hold one copy of them, and their own values."""
    a = ServiceInstance("orders", "h", 1, metadata={"pod": "a", "zone": "z"}).metadata
    b = ServiceInstance("orders", "h", 2, metadata={"pod": "b", "zone": "z"}).metadata
    assert isinstance(a, FrozenMetadata)
    assert isinstance(b, FrozenMetadata)
    assert a._index is b._index
    assert ServiceInstance("orders", "h", 3).metadata is ServiceInstance("o", "h", 4).metadata
