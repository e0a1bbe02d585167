"""ServiceConfig: per-service settings merged over the balancer's defaults (Spring's per-client)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from lbclient._endpoint import DEFAULT_EWMA_DECAY
from lbclient._exceptions import ConfigurationError
from lbclient._retry import RetryPolicy
from lbclient.filters._base import FilterFactory
from lbclient.filters.outlier import OutlierDetection
from lbclient.filters.slow_start import SlowStart
from lbclient.health import HealthCheck
from lbclient.routing._base import Router
from lbclient.routing._settings import check_routing
from lbclient.routing.priority import DEFAULT_OVERPROVISIONING
from lbclient.schedulers import Scheduler, scheduler_class


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Everything that may differ from one service to the next.

    ``LoadBalancer(registry, scheduler="peak_ewma", services={"search": {"scheduler":
    "ring_hash"}})`` gives every service peak_ewma except ``search``.
    """

    scheduler: str | type[Scheduler] = "round_robin"
    """Spring's and Envoy's default: predictable, even spread. Prefer ``peak_ewma`` when
    instances can be slow: with one backend 20x slower it kept p99 at 1.3x the all-healthy
    p99 where round robin reached 10x (benchmarks/README.md, "Slow backend"); it concentrates
    light sequential traffic on the fastest instance, which surprises some users."""
    scheduler_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    filters: Sequence[FilterFactory] = ()
    """The supplier chain, in order; each factory makes a fresh filter per service."""
    ewma_decay: float = DEFAULT_EWMA_DECAY
    """Peak EWMA decay time in seconds (Finagle: 10 s)."""
    zone: str | None = None
    """The caller's own zone: instances there are preferred while any of them is healthy."""
    health_check: HealthCheck | None = None
    """Active probes, off unless given: ``HttpHealthCheck("/health")``, TcpHealthCheck(), ..."""
    heartbeat_timeout: float | None = None
    """Seconds without a sign of life (passing probe, registry heartbeat, success) before an
    instance is taken out; None: no silence window."""
    outlier: OutlierDetection | None = dataclasses.field(default_factory=OutlierDetection)
    """Passive outlier ejection, on by default (Envoy's defaults); None turns it off."""
    panic_threshold: float = 0.5
    """Below this share of healthy instances, ignore health (fail_open) or fail fast."""
    fail_open: bool = True
    """In panic: True balances across all instances, False raises NoAvailableInstance."""
    slow_start: SlowStart | None = None
    """Ramp the weight of new and readmitted instances (weight-aware schedulers only)."""
    subset_size: int | None = None
    """Use only a deterministic subset of this many instances (off by default)."""
    subset_key: str | None = None
    """This client's identity for subsetting (default: the host name)."""
    hint_header: str | None = None
    """Spring's hint: the request header (gRPC: metadata key) naming a hint; the instances
    whose ``metadata[hint_key]`` equals it take the request (none: all). None: off."""
    hint_key: str = "hint"
    """The instance metadata key the hint is matched against."""
    sticky_cookie: str | None = None
    """Spring's sticky session: the cookie (gRPC: metadata key) holding an instance id; that
    instance takes the request while usable. None: off."""
    sticky_set_cookie: bool = False
    """Set ``sticky_cookie`` to the chosen instance's id on httpx responses (the client's
    cookie jar then keeps later requests on it)."""
    same_instance: bool = False
    """Spring's same-instance preference: keep the instance chosen last while usable."""
    routers: Sequence[Router] = ()
    """Your own request-aware rules (``lbclient.routing.SubsetRouter``, ...), asked in order
    after the built-in ones; see docs/routing.md."""
    overprovisioning_factor: float = DEFAULT_OVERPROVISIONING
    """Envoy's priority spill-over: a level keeps all traffic while its healthy share x this
    factor is at least 1 (1.4: down to ~71% healthy)."""

    def __post_init__(self) -> None:
        scheduler_class(self.scheduler)  # fail at configuration time, naming the choices
        if self.ewma_decay <= 0:
            raise ConfigurationError(f"ewma_decay must be > 0, got {self.ewma_decay}")
        _check_health_settings(self)
        check_routing(self)

    def merged(self, overrides: Mapping[str, Any] | ServiceConfig) -> ServiceConfig:
        """A copy with ``overrides`` applied; unknown keys are an error naming the valid ones."""
        if isinstance(overrides, ServiceConfig):
            return overrides
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigurationError(
                f"unknown service setting(s) {sorted(unknown)}; valid: {sorted(names)}"
            )
        return dataclasses.replace(self, **overrides)


def _check_health_settings(config: ServiceConfig) -> None:
    checks: list[tuple[str, object, type, str]] = [
        ("health_check", config.health_check, HealthCheck, "lbclient.HttpHealthCheck('/health')"),
        ("outlier", config.outlier, OutlierDetection, "lbclient.OutlierDetection()"),
        ("slow_start", config.slow_start, SlowStart, "lbclient.SlowStart(window=30)"),
    ]
    for name, value, kind, example in checks:
        if value is not None and not isinstance(value, kind):
            raise ConfigurationError(
                f"{name} must be a {kind.__name__} or None, got {value!r}; e.g. {name}={example}"
            )
    if not 0.0 <= config.panic_threshold <= 1.0:
        raise ConfigurationError(
            f"panic_threshold is a share in [0, 1] (0 disables), got {config.panic_threshold}"
        )
    if config.heartbeat_timeout is not None and config.heartbeat_timeout <= 0:
        raise ConfigurationError(f"heartbeat_timeout must be > 0, got {config.heartbeat_timeout}")
    if config.subset_size is not None and config.subset_size < 1:
        raise ConfigurationError(f"subset_size must be >= 1, got {config.subset_size}")
