"""PickContext: the request-dependent input a scheduler may use."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class PickContext:
    """What a scheduler may know about the request being placed.

    ``key``: the hash key for ring_hash, maglev, rendezvous, dh, lblc, ... (a user id, a
    cart id). ``source``: the caller's identity for ``sh``. ``zone``: the caller's zone.
    ``exclude``: instance ids not to pick again (retries avoid the previous instance).
    ``attributes``: free-form data for custom schedulers and filters.
    """

    key: str | bytes | None = None
    source: str | None = None
    zone: str | None = None
    exclude: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def excluding(self, instance_id: str) -> PickContext:
        """The same context, also avoiding ``instance_id`` (used by retries)."""
        return dataclasses.replace(self, exclude=self.exclude | {instance_id})


EMPTY_CONTEXT = PickContext()
