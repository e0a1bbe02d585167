"""Deterministic subsetting (Google SRE book, ch. 20; Spring's SubsetServiceInstanceListSupplier).

With many clients and many instances, every client connecting to every instance costs each
instance a connection (and health probes) per client. A subset gives each client ``size``
instances such that clients spread evenly: instances are shuffled per "round" of clients
(seeded by the round number, so every client of the round shuffles alike) and each client of
the round takes its own slice. The client's identity (``subset_key``, default the host name)
decides its round and slice, so a restart keeps the same subset.

Off by default (Spring's supplier is opt-in too; its size when on is 100): subsetting only
pays when clients x instances is large, and it makes per-client load uneven when it is not.
"""

from __future__ import annotations

import random
import socket
import zlib
from collections.abc import Sequence

from lbclient import _validate as check
from lbclient._endpoint import Endpoint
from lbclient.filters._base import Filter

DEFAULT_SUBSET_SIZE = 100
"""Spring's default subset size."""

MAX_SUBSET_SIZE = 100_000
"""Subsets are for large services; more than this is a unit mistake."""


def deterministic_subset(ids: Sequence[str], client: str, size: int) -> list[str]:
    """The ids ``client`` uses: all when there are at most ``size``, else its slice."""
    if len(ids) <= size:
        return list(ids)
    ordered = sorted(ids)
    count = len(ordered) // size
    client_hash = zlib.crc32(client.encode())
    random.Random(client_hash // count).shuffle(ordered)
    start = (client_hash % count) * size
    return ordered[start : start + size]


class SubsetFilter(Filter):
    """Let through only this client's deterministic subset of the instances."""

    def __init__(self, size: int = DEFAULT_SUBSET_SIZE, client: str | None = None) -> None:
        self.size = check.integer("subset_size", size, minimum=1, maximum=MAX_SUBSET_SIZE)
        self.client = check.optional(check.text, "subset_key", client) or socket.gethostname()

    def apply(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        if len(endpoints) <= self.size:
            return endpoints
        chosen = set(deterministic_subset([e.id for e in endpoints], self.client, self.size))
        return [e for e in endpoints if e.id in chosen]
