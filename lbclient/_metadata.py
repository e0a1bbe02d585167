"""FrozenMetadata: the read-only metadata of a ServiceInstance, small at 100,000 instances.

A registry gives the instances of a service the same metadata keys (Consul's four
``consul.*`` keys; Kubernetes' ``pod``, ``namespace``, ``slice``...), so the keys and their
positions are stored once, in an index shared by every mapping with those keys in that
order, and each mapping holds only the tuple of its values. Four keys take 120 bytes where
a dict behind a MappingProxyType took 224.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

_INDEXES: dict[tuple[str, ...], dict[str, int]] = {}
_INDEXES_LIMIT = 1024
"""Key sets remembered; when full the table starts over (a key set seen again is shared
again), so a registry sending ever-new keys cannot grow it without bound."""


def _index_of(keys: tuple[str, ...]) -> dict[str, int]:
    index = _INDEXES.get(keys)
    if index is None:
        if len(_INDEXES) >= _INDEXES_LIMIT:
            _INDEXES.clear()
        index = _INDEXES.setdefault(keys, {key: i for i, key in enumerate(keys)})
    return index


class FrozenMetadata(Mapping[str, str]):
    """An immutable ``str -> str`` mapping; equal to any mapping with the same items.

    Behaves as the ``MappingProxyType`` it replaces (its repr included, so instance reprs are
    unchanged), and is unhashable like it; unlike it, it can be pickled.

    >>> meta = FrozenMetadata({"zone": "eu-1a", "version": "2"})
    >>> meta["zone"], meta == {"version": "2", "zone": "eu-1a"}
    ('eu-1a', True)
    """

    __slots__ = ("_index", "_values")
    _index: dict[str, int]
    _values: tuple[str, ...]

    def __init__(self, items: Mapping[str, str]) -> None:
        _set_index(self, _index_of(tuple(items)))
        _set_values(self, tuple(items.values()))

    def __getitem__(self, key: str) -> str:
        return self._values[self._index[key]]

    def get(self, key: str, default: Any = None) -> Any:
        position = self._index.get(key)
        return default if position is None else self._values[position]

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if type(other) is FrozenMetadata and other._index is self._index:  # (no ABC check)
            return self._values == other._values
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # as a dict or a mappingproxy

    def __repr__(self) -> str:
        return f"mappingproxy({dict(self.items())!r})"

    def copy(self) -> dict[str, str]:
        """A plain dict of the items (as ``MappingProxyType.copy``)."""
        return dict(self.items())

    def __or__(self, other: Mapping[str, str]) -> dict[str, str]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self, **other}

    def __ror__(self, other: Mapping[str, str]) -> dict[str, str]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**other, **self}

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"FrozenMetadata is read-only (cannot set {name!r})")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"FrozenMetadata is read-only (cannot delete {name!r})")

    def __reduce__(self) -> tuple[type[FrozenMetadata], tuple[dict[str, str]]]:
        return FrozenMetadata, (dict(self.items()),)


_set_index = FrozenMetadata._index.__set__  # type: ignore[attr-defined]
_set_values = FrozenMetadata._values.__set__  # type: ignore[attr-defined]
"""The slots' own setters: the way past ``__setattr__`` that costs least per instance."""
_new = object.__new__


def frozen_metadata(keys: tuple[str, ...], values: tuple[str, ...]) -> FrozenMetadata:
    """``FrozenMetadata(dict(zip(keys, values)))`` from the tuples a caller has already
    checked (distinct keys, strings), without building anything else."""
    meta: FrozenMetadata = _new(FrozenMetadata)
    _set_index(meta, _index_of(keys))
    _set_values(meta, values)
    return meta


EMPTY = FrozenMetadata({})
"""The metadata of every instance that has none (one object)."""
