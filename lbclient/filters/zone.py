"""Zone preference (Spring's ZonePreferenceServiceInstanceListSupplier).

Keep the instances in the caller's zone (``ServiceConfig.zone``) when at least one of them
is usable; otherwise use every zone. It runs after the health links, so "usable" means
healthy: a zone whose instances are all down falls back instead of failing.

Kubernetes topology hints come first: when every usable instance carries hints
(``hints.forZones``, in metadata ``k8s.hints.for_zones``) and one names the caller's zone,
the instances hinted for that zone are used, whatever zone they are in (kube-proxy's rule).
With ``zone_routing="aware"`` this link only applies hints; the routing stage then shares
traffic between zones in proportion (``lbclient.routing.locality``).
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


HINTS_KEY = "k8s.hints.for_zones"
"""Instance metadata: the zones a topology hint assigns the instance to, comma-separated."""


def hinted_for(endpoints: Sequence[Endpoint], zone: str) -> list[Endpoint] | None:
    """The endpoints hinted for ``zone``, when every endpoint has a hint and one names it;
    None otherwise (kube-proxy then uses them all)."""
    hinted = []
    for endpoint in endpoints:
        zones = endpoint.instance.metadata.get(HINTS_KEY)
        if zones is None:
            return None
        if zone in zones.split(","):
            hinted.append(endpoint)
    return hinted or None


class ZonePreferenceFilter(Filter):
    """Prefer instances in ``zone``; fall back to all when none there is usable.

    ``prefer_local=False`` keeps only the topology hints (zone-aware routing shares the
    rest between zones later)."""

    def __init__(self, zone: str, *, prefer_local: bool = True) -> None:
        self.zone = check.text("zone", zone)
        self.prefer_local = prefer_local
        self._falling_back: bool | None = None

    def apply(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        hinted = hinted_for(endpoints, self.zone)
        if hinted is not None:
            return hinted
        if not self.prefer_local:
            return endpoints
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
