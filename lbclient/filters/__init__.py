"""The supplier chain between the registry's list and the scheduler.

Built from ServiceConfig by ``build_chain`` (see ``_chain.py`` for the order); a custom
link subclasses Filter and goes in ``filters=[MyFilter]``.

How the health signals combine, for one instance:

- The registry decides who exists (Consul returns passing instances only, Kubernetes ready
  endpoints); an instance it drops is gone at once, probes and counters included.
- Active probes (``health_check``), the silence window (``heartbeat_timeout``) and passive
  outlier ejection (``outlier``, on by default) each veto independently: an instance is
  usable only if none of them objects. A passing probe also counts as a heartbeat and ends
  an outlier ejection early (Envoy). Registries report their own heartbeats (a Consul TTL
  pass) with ``ServiceState.heartbeat(instance_id)``.
- The panic threshold then overrides all three vetoes when fewer than ``panic_threshold``
  of the instances are left: fail open (use everyone) or fail fast (NoAvailableInstance).
- Zone preference (Kubernetes topology hints first) and slow start shape what remains;
  subsetting narrows the list before any of this and never counts as ill health.

A filter sees its service through ``ServiceView`` (name, membership, chain, ``invalidate``,
``heartbeat``), never the balancer itself.
"""

from lbclient.filters._base import Filter, FilterFactory, ServiceView
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
    "ServiceView",
    "SlowStart",
    "SlowStartFilter",
    "SubsetFilter",
    "ZonePreferenceFilter",
    "build_chain",
    "deterministic_subset",
    "instance_zone",
]
