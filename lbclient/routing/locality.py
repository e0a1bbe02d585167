"""Envoy's zone-aware routing: keep traffic in the caller's zone in proportion to capacity.

Zone preference (``filters.zone``) is all-or-nothing: every request stays in the caller's
zone while one instance there is healthy, however few. With ``zone_routing="aware"``, the
share kept local follows capacity (Envoy's ``zone_aware_lb_config``):

- local% is the share of the callers in the caller's zone (``caller_zones``, Envoy's local
  cluster; default: callers spread evenly over the zones the service has instances in),
  upstream% the share of the service's healthy instances there;
- if upstream% >= local%, all traffic stays local; else upstream%/local% of it does, and the
  rest goes to the other zones in proportion to their surplus (upstream% - local%).

Off (every zone, plain balancing) when the service has instances in fewer than two zones,
none in the caller's zone, fewer than ``zone_min_cluster_size`` healthy instances (Envoy's
``min_cluster_size``, 6), or the balancer is in panic. Shares are in basis points (1/10000).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from lbclient._endpoint import Endpoint
from lbclient.filters.zone import instance_zone

TOTAL = 10_000
"""Shares are in basis points, as Envoy's."""


def zone_aware_off(usable: Sequence[Endpoint], zone: str, min_cluster_size: int) -> str | None:
    """Why zone-aware routing is off for this list (Envoy's conditions), or None when on."""
    zones = {instance_zone(e.instance) for e in usable}
    if len(zones) < 2:
        return "the service's usable instances are in fewer than two zones"
    if zone not in zones:
        return f"no usable instance in the caller's zone {zone!r}"
    if len(usable) < min_cluster_size:
        return f"fewer than zone_min_cluster_size={min_cluster_size} usable instances"
    return None


def zone_shares(
    usable: Sequence[Endpoint],
    zone: str,
    callers: Mapping[str, float] | None,
    min_cluster_size: int = 6,
) -> dict[str | None, int] | None:
    """Each zone's share of traffic (basis points), or None when zone-aware routing is off.

    >>> from lbclient import ServiceInstance
    >>> eps = [Endpoint(ServiceInstance("s", "10.0.0.1", 80 + i, zone="ab"[i < 2]))
    ...        for i in range(8)]
    >>> zone_shares(eps, "b", {"a": 1, "b": 1})   # 2 of 8 here, half the callers
    {'b': 5000, 'a': 5000}
    """
    if zone_aware_off(usable, zone, min_cluster_size) is not None:
        return None
    counts = Counter(instance_zone(e.instance) for e in usable)
    total = len(usable)
    upstream = {z: n / total for z, n in counts.items()}
    if callers is None:
        named = [z for z in counts if z is not None]
        callers = dict.fromkeys(named, 1.0)
    weight = sum(callers.values())
    local = {z: w / weight for z, w in callers.items()}
    mine = local.get(zone, 0.0)
    if upstream[zone] >= mine:
        return {zone: TOTAL}
    kept = int(TOTAL * upstream[zone] / mine)
    surplus = {z: upstream[z] - local.get(z or "", 0.0) for z in counts if z != zone}
    surplus = {z: s for z, s in surplus.items() if s > 0}
    if not surplus:  # the callers' zones cover the rest exactly: spread by capacity
        surplus = {z: upstream[z] for z in counts if z != zone}
    spread = sum(surplus.values())
    shares: dict[str | None, int] = {zone: kept}
    left = TOTAL - kept
    for z, s in surplus.items():
        shares[z] = int(left * s / spread)
    shares[zone] += TOTAL - sum(shares.values())  # rounding: the local zone keeps the rest
    return shares
