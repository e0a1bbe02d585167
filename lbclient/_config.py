"""ServiceConfig: per-service settings merged over the balancer's defaults (Spring's per-client)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from lbclient._endpoint import DEFAULT_EWMA_DECAY
from lbclient._exceptions import ConfigurationError
from lbclient._retry import RetryPolicy
from lbclient.filters._base import FilterFactory
from lbclient.schedulers import Scheduler, scheduler_class


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Everything that may differ from one service to the next.

    ``LoadBalancer(registry, scheduler="peak_ewma", services={"search": {"scheduler":
    "ring_hash"}})`` gives every service peak_ewma except ``search``.
    """

    scheduler: str | type[Scheduler] = "round_robin"
    scheduler_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    filters: Sequence[FilterFactory] = ()
    """The supplier chain, in order; each factory makes a fresh filter per service."""
    ewma_decay: float = DEFAULT_EWMA_DECAY
    """Peak EWMA decay time in seconds (Finagle: 10 s)."""
    zone: str | None = None
    """The caller's own zone, for zone-aware filters and schedulers."""

    def __post_init__(self) -> None:
        scheduler_class(self.scheduler)  # fail at configuration time, naming the choices
        if self.ewma_decay <= 0:
            raise ConfigurationError(f"ewma_decay must be > 0, got {self.ewma_decay}")

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
