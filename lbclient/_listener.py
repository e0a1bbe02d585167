"""Lifecycle hooks for metrics and tracing (Spring's LoadBalancerLifecycle).

The exporters (``lbclient.metrics.PrometheusMetrics``, ``lbclient.otel``) are listeners built
on these hooks and nothing else, so a home-grown exporter can see everything they see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from lbclient._context import PickContext
from lbclient._instance import ServiceInstance
from lbclient._outcome import Failure, Outcome

if TYPE_CHECKING:
    from lbclient._handle import PickHandle


class LoadBalancerListener:
    """Subclass and override what you need; every hook is called synchronously, so keep it short.

    An exception from a hook is logged and never breaks a request. With no listener registered
    the balancer skips all of this (no cost); each hook below says when it runs.

    Request path (the thread or task of the request; the caller's tracing context is current):
    ``on_pick``/``on_attempt`` as an attempt starts, ``on_complete``/``on_attempt_end`` as it
    ends, ``on_retry`` and ``on_retry_refused`` when a failed attempt is (not) resent,
    ``on_refused`` when a limit or the circuit breaker refuses a call,
    ``on_hedge`` and ``on_hedge_refused`` when a slow attempt is (not) hedged.

    Background (watch threads, probe and timer threads, or the request path when an attempt's
    failure triggers it): ``on_instances``, ``on_instance_states``, ``on_ejection``,
    ``on_readmission``, ``on_probe``, ``on_registry_update``, ``on_registry_error`` and
    ``on_registry_recovered``.
    """

    reads_request: ClassVar[bool] = True
    """Set it to False in a listener that never reads ``context.attributes["request"]`` in
    ``on_pick`` or ``on_attempt``: the HTTP transports then skip building a pick context per
    request (as they do with no listener), which the exporters use to stay cheap."""

    # -- the request path ------------------------------------------------------------------

    def on_pick(self, service: str, instance: ServiceInstance, context: PickContext) -> None:
        """An attempt is about to go to ``instance``."""

    def on_complete(self, service: str, instance: ServiceInstance, outcome: Outcome) -> None:
        """An attempt on ``instance`` finished (or was cancelled)."""

    def on_attempt(self, handle: PickHandle) -> None:
        """An attempt starts (right after ``on_pick``). ``handle.attempt`` numbers it: 1 for the
        first try, 2 for the first retry. The same handle object comes back in
        ``on_attempt_end``, so it can key per-attempt state such as a tracing span."""

    def on_attempt_end(self, handle: PickHandle, outcome: Outcome) -> None:
        """The attempt of ``handle`` ended (right after ``on_complete``); called exactly once."""

    def on_retry(self, service: str, attempt: int, failure: Failure | None) -> None:
        """Attempt number ``attempt`` failed with ``failure`` and another attempt will follow
        (``failure`` is None for a retried status that is not the instance's fault, a 429)."""

    def on_refused(self, service: str, reason: str) -> None:
        """A call was refused without being sent: ``reason`` is the limit that refused it
        (``"max_requests"``, ``"max_pending"``, ``"max_requests_per_instance"``, the caller
        got ``Overloaded``) or ``"circuit_open"`` (the caller got ``CircuitOpen``)."""

    def on_circuit_state(self, service: str, state: str) -> None:
        """The service's circuit breaker went ``"open"``, ``"half_open"`` or ``"closed"``
        (on the request path of the call that moved it)."""

    def on_retry_refused(self, service: str, attempt: int, failure: Failure | None) -> None:
        """Attempt ``attempt`` failed and could have been retried, but the service's retry budget
        is spent (Envoy's ``upstream_rq_retry_overflow``): the failure goes to the caller."""

    def on_hedge(self, service: str, attempt: int, instance: ServiceInstance) -> None:
        """Attempt ``attempt`` has not answered within the hedge delay: a backup attempt goes
        to ``instance`` (called after the backup's own ``on_pick`` and ``on_attempt``)."""

    def on_hedge_refused(self, service: str, attempt: int) -> None:
        """A hedge was due for attempt ``attempt`` but a budget said no (the hedge budget,
        or the retry budget hedges also draw on)."""

    # -- what the balancer knows -----------------------------------------------------------

    def on_instances(self, service: str, usable: Sequence[ServiceInstance]) -> None:
        """The usable list of ``service`` changed."""

    def on_instance_states(self, service: str, counts: Mapping[str, int]) -> None:
        """After the usable list changed: how many instances are in each state. The states are
        ``usable`` and, for the others, why they are out: ``ejected`` (outlier detection),
        ``unhealthy`` (active health check), ``silent`` (no heartbeat), ``filtered`` (left out
        by a subset or zone filter, or by a custom one). Every state is always present."""

    def on_ejection(
        self, service: str, instance: ServiceInstance, reason: str, detail: str
    ) -> None:
        """Outlier detection ejected ``instance``. ``reason`` is one of a few fixed names
        (``consecutive_5xx``, ``consecutive_gateway_failure``,
        ``consecutive_local_origin_failure``, ``success_rate``, ``failure_percentage``),
        fit for a metric label; ``detail`` says it in words (with the counts)."""

    def on_readmission(self, service: str, instance: ServiceInstance, why: str) -> None:
        """An ejected ``instance`` is back: its ejection time is over or a probe passed."""

    def on_probe(self, service: str, instance: ServiceInstance, passed: bool, detail: str) -> None:
        """An active health check probed ``instance`` (every probe, not only changes)."""

    def on_registry_update(self, service: str, instances: Sequence[ServiceInstance]) -> None:
        """The registry published a complete list of ``service`` (changed or not)."""

    def on_registry_error(self, service: str, error: BaseException) -> None:
        """The registry could not be read; the last good list is kept and is now stale."""

    def on_registry_recovered(self, service: str, stale_seconds: float) -> None:
        """The registry answers again after being unreachable for ``stale_seconds``."""


INSTANCE_STATES = ("usable", "ejected", "unhealthy", "silent", "filtered")
"""The states ``on_instance_states`` counts, in the order they are checked."""
