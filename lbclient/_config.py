"""ServiceConfig: per-service settings merged over the balancer's defaults (Spring's per-client).

Every setting is checked when the configuration is made, so a mistake fails at
``LoadBalancer(...)`` with a ConfigurationError naming the setting, the value and what is
valid, never at the first pick. ``ServiceSettings`` is the same list as a TypedDict, for the
keyword arguments of ``LoadBalancer`` and the per-service dicts of ``services=``, so that a
type checker catches ``schedular=`` or ``retry=3`` too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from lbclient import _validate as check
from lbclient._breaker import CircuitBreaker
from lbclient._endpoint import DEFAULT_EWMA_DECAY
from lbclient._hedge import HedgePolicy
from lbclient._retry import RetryPolicy
from lbclient.filters._base import FilterFactory
from lbclient.filters.outlier import OutlierDetection
from lbclient.filters.slow_start import SlowStart
from lbclient.filters.subset import MAX_SUBSET_SIZE
from lbclient.health import HealthCheck
from lbclient.routing._base import Router
from lbclient.routing._settings import check_routing
from lbclient.routing.priority import DEFAULT_OVERPROVISIONING
from lbclient.schedulers import Scheduler, scheduler_class
from lbclient.schedulers._options import check_options

MAX_FILTERS = 100
MAX_LIMIT = 1_000_000
"""The largest concurrency limit accepted: more is no limit, spelt None."""


class ServiceSettings(TypedDict, total=False):
    """The settings of ``ServiceConfig`` as keyword arguments (all optional).

    ``LoadBalancer(registry, scheduler="peak_ewma", services={"search": {"scheduler":
    "ring_hash"}})``: both the keywords and the dict are typed by this.
    """

    scheduler: str | type[Scheduler]
    scheduler_options: Mapping[str, Any]
    retry: RetryPolicy
    filters: Sequence[FilterFactory]
    ewma_decay: float
    zone: str | None
    health_check: HealthCheck | None
    heartbeat_timeout: float | None
    outlier: OutlierDetection | None
    panic_threshold: float
    fail_open: bool
    slow_start: SlowStart | None
    subset_size: int | None
    subset_key: str | None
    hint_header: str | None
    hint_key: str
    hint: str | None
    sticky_cookie: str | None
    sticky_set_cookie: bool
    same_instance: bool
    routers: Sequence[Router]
    overprovisioning_factor: float
    zone_routing: Literal["prefer", "aware"]
    caller_zones: Mapping[str, float] | None
    zone_min_cluster_size: int
    max_requests: int | None
    max_pending: int
    pending_timeout: float
    max_retries: int | None
    max_requests_per_instance: int | None
    circuit_breaker: CircuitBreaker | None
    hedge: HedgePolicy | None


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
    hint: str | None = None
    """The hint of requests that name none (Spring's ``hint.<service>``; with no
    ``hint_header``, Spring's header ``X-SC-LB-Hint`` is read)."""
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
    zone_routing: Literal["prefer", "aware"] = "prefer"
    """With ``zone``: ``"prefer"`` keeps all traffic in the caller's zone while it has a
    healthy instance (Spring); ``"aware"`` keeps a share in proportion to its capacity and
    spills the rest to other zones (Envoy's zone-aware routing)."""
    caller_zones: Mapping[str, float] | None = None
    """For ``zone_routing="aware"``: how the callers are spread over zones (Envoy's local
    cluster), e.g. ``{"a": 3, "b": 1}``; None: evenly over the service's zones."""
    zone_min_cluster_size: int = 6
    """Below this many healthy instances, zone-aware routing is off (Envoy's default)."""
    max_requests: int | None = None
    """Calls in flight at once to this service (Envoy: 1024); None: no limit. Off by default:
    docs/bounding-calls.md says why lbclient does not copy Envoy's defaults."""
    max_pending: int = 0
    """Calls that may wait for one of ``max_requests`` (Envoy: 1024); 0: refuse at once."""
    pending_timeout: float = 1.0
    """Seconds a call waits in the pending queue at most (never past its deadline)."""
    max_retries: int | None = None
    """Calls retrying at once (Envoy: 3); None: only the retry budget limits retries."""
    max_requests_per_instance: int | None = None
    """Attempts in flight at once on one instance; a full instance is skipped. None: no limit."""
    circuit_breaker: CircuitBreaker | None = None
    """A service-level circuit breaker (``lbclient.CircuitBreaker()``); None: off."""
    hedge: HedgePolicy | None = None
    """Hedged requests for idempotent calls (``HedgePolicy(delay="p95")``); off by default."""

    def __post_init__(self) -> None:
        cls = scheduler_class(self.scheduler)  # fail at configuration time, naming the choices
        object.__setattr__(self, "scheduler_options", check_options(cls, self.scheduler_options))
        check.instance_of("retry", self.retry, RetryPolicy, "lbclient.RetryPolicy(attempts=2)")
        self._check_filters()
        check_routing(self)
        object.__setattr__(self, "ewma_decay", check.seconds("ewma_decay", self.ewma_decay))
        check.optional(check.text, "zone", self.zone)
        check.optional(check.text, "subset_key", self.subset_key)
        check.optional(check.seconds, "heartbeat_timeout", self.heartbeat_timeout)
        check.optional(
            check.integer, "subset_size", self.subset_size, minimum=1, maximum=MAX_SUBSET_SIZE
        )
        check.number("panic_threshold", self.panic_threshold, minimum=0.0, maximum=1.0)
        check.flag("fail_open", self.fail_open)
        examples: list[tuple[str, object, type, str]] = [
            ("health_check", self.health_check, HealthCheck, "lbclient.HttpHealthCheck('/health')"),
            ("outlier", self.outlier, OutlierDetection, "lbclient.OutlierDetection()"),
            ("slow_start", self.slow_start, SlowStart, "lbclient.SlowStart(window=30)"),
            (
                "circuit_breaker",
                self.circuit_breaker,
                CircuitBreaker,
                "lbclient.CircuitBreaker(failure_rate=0.5)",
            ),
        ]
        if self.hedge is not None:
            examples.append(("hedge", self.hedge, HedgePolicy, "lbclient.HedgePolicy('p95')"))
        for name, value, kind, example in examples:
            if value is not None:
                check.instance_of(name, value, kind, f"{example} or None")
        self._check_limits()
        if self.subset_key is not None and self.subset_size is None:
            check.warn("subset_key has no effect without subset_size (subsetting is off)")
        if self.slow_start is not None and not cls.uses_weights:
            check.warn(
                f"slow_start has no effect with scheduler {cls.name!r}, which ignores weights; "
                "use a weight-aware one (weighted_round_robin, least_request, peak_ewma, ...)"
            )

    def _check_limits(self) -> None:
        """Concurrency limits are whole numbers; None (where allowed) means no limit."""
        for name in ("max_requests", "max_retries", "max_requests_per_instance"):
            least = 0 if name == "max_retries" else 1
            check.optional(
                check.integer, name, getattr(self, name), minimum=least, maximum=MAX_LIMIT
            )
        check.integer("max_pending", self.max_pending, minimum=0, maximum=MAX_LIMIT)
        check.seconds("pending_timeout", self.pending_timeout)
        if self.max_requests is None and self.max_pending:
            check.warn("max_pending has no effect without max_requests (nothing to wait for)")

    def _check_filters(self) -> None:
        filters = self.filters
        if isinstance(filters, (str, bytes)) or not isinstance(filters, Sequence):
            raise check.invalid("filters", filters, "a list of filter classes or factories")
        if len(filters) > MAX_FILTERS:
            raise check.invalid("filters", filters, f"at most {MAX_FILTERS} filters")
        for factory in filters:
            if not callable(factory):
                raise check.invalid(
                    "filters", filters, f"filter classes or factories, not {factory!r}"
                )
        object.__setattr__(self, "filters", tuple(filters))

    def merged(
        self,
        overrides: ServiceSettings | Mapping[str, Any] | ServiceConfig,
        setting: str = "service settings",
    ) -> ServiceConfig:
        """A copy with ``overrides`` applied; unknown keys are an error naming the valid ones."""
        if isinstance(overrides, ServiceConfig):
            return overrides
        if not isinstance(overrides, Mapping):
            raise check.invalid(
                setting,
                overrides,
                "a dict of settings such as {'scheduler': 'ring_hash'} or a ServiceConfig",
            )
        check.check_names(overrides, SETTINGS, where=f"{setting}: " if "[" in setting else "")
        return dataclasses.replace(self, **overrides)


SETTINGS = frozenset(f.name for f in dataclasses.fields(ServiceConfig))
"""Every setting name, for did-you-mean on a typo."""
