"""sh (LVS source hashing): the caller's identity, ``PickContext.source``, picks the instance.

The same weighted bucket table as ``dh`` (see there: not consistent across list changes),
hashing the source instead of the request key, so all requests from one caller (a tenant, a
user, a client host) go to the same instance while the list stays the same.

No source: a uniformly random instance (``no_key_fallback``). Retries take the next bucket.
"""

from __future__ import annotations

from lbclient._context import PickContext
from lbclient.schedulers.dh import DestinationHashScheduler


class SourceHashScheduler(DestinationHashScheduler):
    """Source hash modulo a weighted bucket table (IPVS sh)."""

    name = "sh"
    aliases = ()
    uses_key = False
    """sh reads ``PickContext.source``, not the request key."""

    def key_of(self, context: PickContext) -> str | None:
        return context.source
