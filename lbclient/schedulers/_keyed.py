"""KeyedScheduler: the shared shape of the schedulers that hash a request key.

A keyed scheduler turns ``PickContext.key`` (``source`` for ``sh``) into a stable 64-bit hash
and maps it to an instance through a structure built once per list (a ring, a table, ...).
With no key, it falls back to a uniformly random instance (``no_key_fallback``): a request
without a key has no affinity to keep, and raising would turn a missing header into an outage.

Structures are built over the instances sorted by id, not in the registry's order, so that
every client seeing the same set maps every key the same way.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, ClassVar

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._hashing import hash64


class KeyedScheduler(Scheduler):
    """Base of the hash-based schedulers: key → hash → ``choose_hash``; retries ``walk``."""

    uses_key = True
    no_key_fallback: ClassVar[str] = "random"
    """What a request without a key gets: ``"random"``, a uniformly random instance."""

    def __init__(self, endpoints: Sequence[Endpoint], **kwargs: Any) -> None:
        super().__init__(endpoints, **kwargs)
        self.ordered: tuple[Endpoint, ...] = tuple(sorted(self.endpoints, key=attrgetter("id")))

    def key_of(self, context: PickContext) -> str | bytes | None:
        """The request's hash input (``sh`` overrides it to read ``source``)."""
        return context.key

    def choose(self, context: PickContext) -> Endpoint:
        key = self.key_of(context)
        if key is None:
            return self.endpoints[int(self.rng.random() * len(self.endpoints))]
        return self.choose_hash(hash64(key))

    def choose_excluding(self, context: PickContext, chosen: Endpoint) -> Endpoint:
        """Retry path: continue along the structure from the key's position (no rebuild)."""
        key = self.key_of(context)
        if key is None:
            return random_excluding(self.endpoints, context.exclude, self.rng) or chosen
        found = self.walk(hash64(key), context.exclude)
        if found is None:
            found = random_excluding(self.endpoints, context.exclude, self.rng)
        return found or chosen

    @abstractmethod
    def choose_hash(self, key_hash: int) -> Endpoint:
        """The instance a key with this hash maps to."""

    @abstractmethod
    def walk(self, key_hash: int, exclude: frozenset[str]) -> Endpoint | None:
        """The first instance after the key's own that is not excluded (None if none is)."""


def random_excluding(
    endpoints: Sequence[Endpoint], exclude: frozenset[str], rng: random.Random
) -> Endpoint | None:
    """A uniformly random endpoint not in ``exclude``, or None when every one is."""
    remaining = [e for e in endpoints if e.id not in exclude]
    return remaining[int(rng.random() * len(remaining))] if remaining else None
