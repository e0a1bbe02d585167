"""The supplier chain between the registry's list and the scheduler.

Built from ServiceConfig by ``build_chain`` (see ``_chain.py`` for the order); a custom
link subclasses Filter and goes in ``filters=[MyFilter]``.
"""

from lbclient.filters._base import Filter, FilterFactory
from lbclient.filters._chain import build_chain
from lbclient.filters.active import HealthCheckFilter
from lbclient.filters.heartbeat import HeartbeatFilter
from lbclient.filters.outlier import OutlierDetection, OutlierFilter
from lbclient.filters.panic import PanicThreshold, PanicVerdict
from lbclient.filters.slow_start import SlowStart, SlowStartFilter
from lbclient.filters.subset import SubsetFilter, deterministic_subset
from lbclient.filters.zone import ZonePreferenceFilter, instance_zone

__all__ = [
    "Filter",
    "FilterFactory",
    "HealthCheckFilter",
    "HeartbeatFilter",
    "OutlierDetection",
    "OutlierFilter",
    "PanicThreshold",
    "PanicVerdict",
    "SlowStart",
    "SlowStartFilter",
    "SubsetFilter",
    "ZonePreferenceFilter",
    "build_chain",
    "deterministic_subset",
    "instance_zone",
]
