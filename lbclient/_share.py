"""One object for equal values: what 100,000 instances repeat is stored once.

Registries send the same values for many instances (a port, a node, a zone, a set of tags)
as new objects in every answer; keeping the first equal one instead of each saves its size
per instance (a port above 256 is 32 bytes, a small frozenset of tags 216). Each table is
bounded: full, it starts over (a value seen again is shared again), so a registry sending
ever-new values cannot make it grow without bound.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

H = TypeVar("H", bound=Hashable)

LIMIT = 4096
"""Values a table keeps at most."""


def shared(table: dict[H, H], value: H) -> H:
    """The value equal to ``value`` first kept in ``table`` (``value`` itself when new)."""
    found = table.get(value)
    if found is None:
        if len(table) >= LIMIT:
            table.clear()
        found = table.setdefault(value, value)
    return found
