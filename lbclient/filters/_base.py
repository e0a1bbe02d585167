"""The supplier chain: filters that turn the registry's list into the usable list.

Filters run when the list or an instance's state changes, never per request (Spring's
ServiceInstanceListSupplier decorators, applied by the balancer). A filter that learns
something new (a probe failed, an instance was ejected) calls ``invalidate()`` on the state it
is bound to, and the balancer recomputes the usable list and rebuilds the scheduler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from lbclient._endpoint import Endpoint
from lbclient._outcome import Outcome


class ServiceView(Protocol):
    """What a filter sees of the service it is bound to: a narrow interface, so that the
    filters depend on nothing of the balancer (``ServiceState`` implements it)."""

    name: str

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """The current membership, by instance id."""

    @property
    def filters(self) -> Sequence[Filter]:
        """The service's whole chain (a probe's result is news for its neighbours)."""

    def invalidate(self, defer: Callable[[Callable[[], None]], object] | None = None) -> None:
        """Recompute the usable list (``defer``: build the scheduler through it, later)."""

    def heartbeat(self, instance_id: str) -> None:
        """A sign of life of ``instance_id``, told to every filter."""

    @property
    def listeners(self) -> Sequence[object]:
        """The balancer's listeners (empty: ``emit`` would do nothing, skip building args)."""

    def emit(self, hook: str, *args: Any) -> None:
        """Call ``hook(service, *args)`` on every listener (a failing one is only logged)."""


class Filter(ABC):
    """One link of the chain, bound to one service's state."""

    state: ServiceView
    judges_health: ClassVar[bool] = False
    """True for links that drop instances because they look unhealthy (probes, heartbeat,
    outlier ejection). The panic threshold compares what enters the first such link with what
    leaves the last one, so narrowing links (subset, zone) never count as ill health."""

    def bind(self, state: ServiceView) -> None:
        """Attach to a service; start background work here (probes, timers)."""
        self.state = state

    @abstractmethod
    def apply(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        """Return the endpoints this link lets through (may adjust ``Endpoint.weight``)."""

    def on_membership(self, added: Sequence[Endpoint], removed: Sequence[Endpoint]) -> None:
        """The registry added or removed instances (stop probing the removed ones)."""

    def on_complete(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """Feedback from every finished attempt (outlier detection counts here). Keep it cheap."""

    success_feedback: ClassVar[bool] = True
    """False: ``on_complete`` learns nothing from a success (outlier detection reads
    ``Endpoint.successes`` instead), so successful attempts skip it: the request path's
    common case then builds no Outcome at all."""

    def on_heartbeat(self, endpoint: Endpoint) -> None:
        """``endpoint`` just showed a sign of life (a passing probe, a registry heartbeat)."""

    def stats(self, endpoint: Endpoint) -> dict[str, Any]:
        """Per-instance state this filter wants visible in ``LoadBalancer.stats()``."""
        return {}

    def close(self) -> None:
        """Stop background work; called when the balancer closes."""


FilterFactory = Callable[[], Filter]
"""A zero-argument callable that makes a fresh filter for each service (a class works)."""
