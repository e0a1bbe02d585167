"""Zone preference (Spring's ZonePreferenceServiceInstanceListSupplier).

Keep the instances in the caller's zone (``ServiceConfig.zone``) when at least one of them
is usable; otherwise use every zone. It runs after the health links, so "usable" means
healthy: a zone whose instances are all down falls back instead of failing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lbclient import _validate as check
from lbclient._endpoint import Endpoint
from lbclient._instance import ServiceInstance
from lbclient.filters._base import Filter

log = logging.getLogger("lbclient.health")


def instance_zone(instance: ServiceInstance) -> str | None:
    """The instance's zone: the registry's field, else the ``zone`` metadata (Spring's)."""
    return instance.zone or instance.metadata.get("zone")


class ZonePreferenceFilter(Filter):
    """Prefer instances in ``zone``; fall back to all when none there is usable."""

    def __init__(self, zone: str) -> None:
        self.zone = check.text("zone", zone)
        self._falling_back: bool | None = None

    def apply(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        local = [e for e in endpoints if instance_zone(e.instance) == self.zone]
        fallback = not local and bool(endpoints)
        previous, self._falling_back = self._falling_back, fallback
        if fallback and not previous:
            log.warning(
                "%s: no usable instance in zone %r, using all zones", self.state.name, self.zone
            )
        elif previous and not fallback:
            log.info("%s: back to instances in zone %r", self.state.name, self.zone)
        return local or endpoints
