"""The chain a service gets from its configuration, in the order the links must run.

1. the user's own ``filters`` (they narrow the candidates, e.g. by tag);
2. ``subset_size``: this client's deterministic subset;
3. the health links, each a veto: ``health_check`` (active probes), ``heartbeat_timeout``,
   ``outlier`` (passive ejection, on by default); the balancer applies the panic threshold
   right after the last of them;
4. ``zone``: topology hints, then the caller's zone among the healthy (all-or-nothing
   unless ``zone_routing="aware"``, which shares traffic between zones later);
5. ``slow_start``: ramp the weight of newly usable instances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbclient.filters._base import Filter
from lbclient.filters.active import HealthCheckFilter
from lbclient.filters.heartbeat import HeartbeatFilter
from lbclient.filters.outlier import OutlierFilter
from lbclient.filters.slow_start import SlowStartFilter
from lbclient.filters.subset import SubsetFilter
from lbclient.filters.zone import ZonePreferenceFilter

if TYPE_CHECKING:
    from lbclient._config import ServiceConfig


def build_chain(config: ServiceConfig) -> tuple[Filter, ...]:
    """Fresh filters for one service (filters hold per-service state)."""
    chain: list[Filter] = [factory() for factory in config.filters]
    if config.subset_size is not None:
        chain.append(SubsetFilter(config.subset_size, config.subset_key))
    if config.health_check is not None:
        chain.append(HealthCheckFilter(config.health_check))
    if config.heartbeat_timeout is not None:
        chain.append(HeartbeatFilter(config.heartbeat_timeout))
    if config.outlier is not None:
        chain.append(OutlierFilter(config.outlier))
    if config.zone is not None:
        chain.append(ZonePreferenceFilter(config.zone, prefer_local=config.zone_routing != "aware"))
    if config.slow_start is not None:
        chain.append(SlowStartFilter(config.slow_start))
    return tuple(chain)
