"""OpenTelemetry metrics and traces for lbclient: one listener, the API only (extra ``[otel]``).

>>> from lbclient.otel import OpenTelemetryInstrumentation               # doctest: +SKIP
>>> lb = LoadBalancer(registry, listeners=[OpenTelemetryInstrumentation()])

Without providers it uses the global ones (``opentelemetry.metrics.set_meter_provider``,
``trace.set_tracer_provider``), which are no-ops until an SDK is configured.

Traces: one span per attempt (``lbclient.attempt``, kind INTERNAL), a child of whatever span is
current where the request is sent: the CLIENT span of ``HTTPXClientInstrumentor.
instrument_client(client)`` or of the gRPC client instrumentation, or your own. The span is
never made current (an attempt's end can happen in another context, when a streamed body is
closed), so spans started by code below the transport stay siblings. Retries, refused
retries, hedges and ejections are events on the caller's current span, where they read as
part of the request.

Metrics, with attributes ``lbclient.service``, ``server.address``, ``server.port`` and, on
``lbclient.requests``, ``lbclient.outcome``: ``lbclient.requests``,
``lbclient.request.duration`` (s), ``lbclient.requests.active``, ``lbclient.retries``,
``lbclient.retries.refused``, ``lbclient.hedges``, ``lbclient.hedges.refused``,
``lbclient.ejections`` (``lbclient.ejection.reason``),
``lbclient.registry.updates``, ``lbclient.registry.errors``, and observed at collection time
``lbclient.instances`` (``lbclient.instance.state``) and ``lbclient.registry.staleness`` (s).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lbclient._balancer import ServiceState
from lbclient._endpoint import Endpoint
from lbclient._exceptions import MissingDependency
from lbclient._handle import PickHandle
from lbclient._instance import ServiceInstance
from lbclient._listener import LoadBalancerListener
from lbclient._observe import LATENCY_BUCKETS, outcome_label
from lbclient._outcome import Failure, Outcome

try:
    from opentelemetry import metrics, trace
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency("lbclient.otel", "otel") from _exc

SCOPE = "lbclient"
SPAN_NAME = "lbclient.attempt"

Attributes = dict[str, Any]

_NO_TRACE = trace.set_span_in_context(trace.INVALID_SPAN, Context())
"""The context batched durations are recorded in: none of them may borrow the flushing
thread's trace as an exemplar (not empty: the SDK takes an empty one for "the current")."""


class _Slot:
    """One endpoint's duration attributes and its ``lbclient.requests`` tallies by outcome."""

    __slots__ = ("attributes", "tallies")

    def __init__(self, attributes: Attributes) -> None:
        self.attributes = attributes
        self.tallies: dict[str, list[Any]] = {}


class OpenTelemetryInstrumentation(LoadBalancerListener):
    """A listener recording lbclient's measurements as OTel instruments and attempts as spans.

    ``meter_provider`` and ``tracer_provider`` default to the global providers. One instance
    can serve several balancers. Attempt spans are started only under a recording span (the
    caller's trace, sampled); ``root_spans=True`` starts them in any case, each attempt then
    being a trace of its own when nothing else is traced.
    """

    reads_request = False  # the attempt hooks read the instance, never the request

    _ATTRIBUTE_CACHE = 4096
    """Attribute dicts are built once per (service, instance[, outcome]); churn resets them."""

    DURATION_BATCH = 32
    """Durations of attempts without a span are handed to the SDK this many at a time, and
    before every collection: one ``Histogram.record`` in a request's path costs about twice
    what it costs in a run of them (measured in ``benchmarks/bench_http.py --exporters``).
    An attempt with a span records at once, in the caller's context, so that a sampled
    trace can make it an exemplar."""

    def __init__(
        self, meter_provider: Any = None, tracer_provider: Any = None, *, root_spans: bool = False
    ) -> None:
        from lbclient import __version__

        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        self._root_spans = root_spans
        meter.create_observable_counter(
            "lbclient.requests",
            [self._observe_requests],
            "{request}",
            "Attempts sent to an instance, by outcome.",
        )
        self._tallies: dict[tuple[str, str, str], list[Any]] = {}
        """``lbclient.requests`` counted here ([attributes, count]) and observed at collection:
        one SDK measurement per attempt (the duration) instead of two."""
        self._lock = threading.Lock()
        self._duration = _seconds_histogram(meter)
        self._durations: deque[tuple[float, Attributes]] = deque()
        """Durations not yet recorded; emptied at every collection (``_observe_requests``)
        and whenever ``DURATION_BATCH`` wait, so a collection never misses one."""
        meter.create_observable_up_down_counter(
            "lbclient.requests.active",
            [self._observe_active],
            "{request}",
            "Attempts started and not yet finished.",
        )
        self._retries = meter.create_counter(
            "lbclient.retries", "{retry}", "Failed attempts resent to another instance."
        )
        self._refused = meter.create_counter(
            "lbclient.retries.refused", "{retry}", "Retries refused by the retry budget."
        )
        self._hedges = meter.create_counter(
            "lbclient.hedges", "{hedge}", "Backup attempts sent for a slow request."
        )
        self._hedges_refused = meter.create_counter(
            "lbclient.hedges.refused", "{hedge}", "Hedges refused by the hedge or retry budget."
        )
        self._calls_refused = meter.create_counter(
            "lbclient.refused",
            "{call}",
            "Calls refused without being sent (a concurrency limit or the circuit breaker).",
        )
        self._ejections = meter.create_counter(
            "lbclient.ejections", "{ejection}", "Instances ejected by outlier detection."
        )
        self._updates = meter.create_counter(
            "lbclient.registry.updates", "{update}", "Complete instance lists from the registry."
        )
        self._errors = meter.create_counter(
            "lbclient.registry.errors", "{error}", "Failed reads of the registry."
        )
        meter.create_observable_gauge(
            "lbclient.instances",
            [self._observe_instances],
            "{instance}",
            "Instances of a service by state.",
        )
        meter.create_observable_gauge(
            "lbclient.registry.staleness",
            [self._observe_staleness],
            "s",
            "Seconds since the first failed registry read of the current outage; 0 when fresh.",
        )
        self._spans: dict[PickHandle, trace.Span] = {}
        self._services: weakref.WeakSet[ServiceState] = weakref.WeakSet()
        """Where ``lbclient.requests.active`` is read from: the balancer's own in-flight
        counts, so an attempt costs no extra measurement."""
        self._attributes: dict[tuple[str, ...], Attributes] = {}
        self._slots: dict[Endpoint, _Slot] = {}
        """What an attempt's end needs, by the attempt's endpoint (an identity lookup, no key
        to build); replaced by an empty one on each registry update, so it holds no departed
        endpoint for long (``_tallies`` stays the authority for the counts)."""
        self._states: dict[str, dict[str, int]] = {}
        self._stale_since: dict[str, float | None] = {}

    # -- per attempt -----------------------------------------------------------------------

    def _attrs(self, service: str, instance: ServiceInstance, outcome: str = "") -> Attributes:
        key = (service, instance.id, outcome)
        attributes = self._attributes.get(key)
        if attributes is None:
            if len(self._attributes) >= self._ATTRIBUTE_CACHE:
                self._attributes.clear()
            attributes = {
                "lbclient.service": service,
                "server.address": instance.host,
                "server.port": instance.port,
            }
            if outcome:
                attributes["lbclient.outcome"] = outcome
            self._attributes[key] = attributes
        return attributes

    def on_attempt(self, handle: PickHandle) -> None:
        if handle.endpoint not in self._slots:
            self._enter(handle)
        if not (self._root_spans or trace.get_current_span().is_recording()):
            return  # nothing to be a part of: no lone one-span traces (unless root_spans)
        instance = handle.instance
        span_attributes: Attributes = {
            **self._attrs(handle.service, instance),
            "lbclient.instance.id": instance.id,
            "lbclient.attempt": handle.attempt,
        }
        if handle.attempt > 1:
            span_attributes["http.request.resend_count"] = handle.attempt - 1
        self._spans[handle] = self._tracer.start_span(
            SPAN_NAME, kind=SpanKind.INTERNAL, attributes=span_attributes
        )

    def _enter(self, handle: PickHandle) -> _Slot:
        """The first attempt on an endpoint since the last registry update: its attributes
        are built, and its balancer is one ``lbclient.requests.active`` is read from."""
        self._services.add(handle.state)
        slot = _Slot(self._attrs(handle.service, handle.instance))
        if len(self._slots) >= self._ATTRIBUTE_CACHE:
            self._slots = {}
        self._slots[handle.endpoint] = slot
        return slot

    def on_attempt_end(self, handle: PickHandle, outcome: Outcome) -> None:
        slot = self._slots.get(handle.endpoint)
        if slot is None:  # a registry update came between the attempt's start and end
            slot = _Slot(self._attrs(handle.service, handle.instance))
        span = self._spans.pop(handle, None)
        if span is not None:
            # a traced attempt's duration may be an exemplar: recorded now, in its context
            self._duration.record(outcome.latency, slot.attributes)
        else:
            durations = self._durations
            durations.append((outcome.latency, slot.attributes))
            if len(durations) >= self.DURATION_BATCH:
                self._record_durations()
        label = outcome_label(outcome)
        tally = slot.tallies.get(label)
        if tally is None:
            tally = slot.tallies[label] = self._tally(handle, label)
        with self._lock:
            tally[1] += 1
        if span is None:
            return
        span.set_attribute("lbclient.outcome", label)
        if outcome.status is not None:
            span.set_attribute("lbclient.status_code", outcome.status)
        if outcome.failure is not None:
            span.set_attribute("error.type", outcome.failure.value)
            span.set_status(Status(StatusCode.ERROR, label))
        span.end()

    def _record_durations(self) -> None:
        """Hand the waiting durations to the histogram; safe from any number of threads (each
        duration is taken by exactly one ``popleft``)."""
        record, durations = self._duration.record, self._durations
        while durations:
            try:
                latency, attributes = durations.popleft()
            except IndexError:  # another thread took the last one
                return
            record(latency, attributes, _NO_TRACE)

    def _tally(self, handle: PickHandle, label: str) -> list[Any]:
        """The ``[attributes, count]`` of ``lbclient.requests`` for this attempt's instance
        and outcome, shared by every endpoint of that instance."""
        key = (handle.service, handle.instance.id, label)
        with self._lock:
            tally = self._tallies.get(key)
            if tally is None:
                attributes = self._attrs(handle.service, handle.instance, label)
                tally = self._tallies[key] = [attributes, 0]
            return tally

    def on_retry(self, service: str, attempt: int, failure: Failure | None) -> None:
        self._retries.add(1, {"lbclient.service": service})
        _event("lbclient.retry", service, attempt=attempt, failure=_kind(failure))

    def on_retry_refused(self, service: str, attempt: int, failure: Failure | None) -> None:
        self._refused.add(1, {"lbclient.service": service})
        _event("lbclient.retry_refused", service, attempt=attempt, failure=_kind(failure))

    def on_hedge(self, service: str, attempt: int, instance: ServiceInstance) -> None:
        self._hedges.add(1, {"lbclient.service": service})
        _event("lbclient.hedge", service, attempt=attempt, instance=instance.id)

    def on_hedge_refused(self, service: str, attempt: int) -> None:
        self._hedges_refused.add(1, {"lbclient.service": service})
        _event("lbclient.hedge_refused", service, attempt=attempt)

    def on_refused(self, service: str, reason: str) -> None:
        self._calls_refused.add(1, {"lbclient.service": service, "lbclient.reason": reason})
        _event("lbclient.refused", service, reason=reason)

    def on_circuit_state(self, service: str, state: str) -> None:
        _event("lbclient.circuit_breaker", service, state=state)

    # -- what the balancer knows -----------------------------------------------------------

    def on_ejection(
        self, service: str, instance: ServiceInstance, reason: str, detail: str
    ) -> None:
        self._ejections.add(1, {"lbclient.service": service, "lbclient.ejection.reason": reason})
        _event("lbclient.ejection", service, instance=instance.id, reason=reason, detail=detail)

    def on_instance_states(self, service: str, counts: Mapping[str, int]) -> None:
        self._states[service] = dict(counts)

    def on_registry_update(self, service: str, instances: Sequence[ServiceInstance]) -> None:
        self._updates.add(1, {"lbclient.service": service})
        self._stale_since[service] = None
        listed = {i.id for i in instances}
        with self._lock:  # the counts of instances that left stop being reported
            for key in [k for k in self._tallies if k[0] == service and k[1] not in listed]:
                del self._tallies[key]
        self._slots = {}

    def on_registry_error(self, service: str, error: BaseException) -> None:
        self._errors.add(1, {"lbclient.service": service})
        if self._stale_since.get(service) is None:
            self._stale_since[service] = time.time()

    def _observe_instances(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"lbclient.service": service, "lbclient.instance.state": state})
            for service, counts in list(self._states.items())
            for state, count in counts.items()
        ]

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        self._record_durations()  # callbacks run before the SDK reads its histograms
        with self._lock:
            return [Observation(count, attributes) for attributes, count in self._tallies.values()]

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(endpoint.in_flight, self._attrs(state.name, endpoint.instance))
            for state in list(self._services)
            for endpoint in list(state.endpoints.values())
        ]

    def _observe_staleness(self, options: CallbackOptions) -> Iterable[Observation]:
        now = time.time()
        return [
            Observation(0.0 if since is None else now - since, {"lbclient.service": service})
            for service, since in list(self._stale_since.items())
        ]


def _kind(failure: Failure | None) -> str:
    return "none" if failure is None else failure.value


def _event(name: str, service: str, **attributes: Any) -> None:
    """Add an event to the caller's span, when there is a recording one."""
    span = trace.get_current_span()
    if span.is_recording():
        prefixed = {f"lbclient.{key}": value for key, value in attributes.items()}
        span.add_event(name, {"lbclient.service": service, **prefixed})


def _seconds_histogram(meter: Meter) -> Histogram:
    """``lbclient.request.duration`` with RPC-sized buckets where the API lets us say so."""
    description = "Duration of each attempt, from the pick to the end of the response."
    try:
        return meter.create_histogram(
            "lbclient.request.duration",
            "s",
            description,
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS),
        )
    except TypeError:  # opentelemetry-api < 1.30 has no advisory: the SDK's views decide
        return meter.create_histogram("lbclient.request.duration", "s", description)
