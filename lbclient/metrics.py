"""Prometheus metrics for lbclient: a listener that feeds ``prometheus_client`` families.

>>> from prometheus_client import start_http_server                      # doctest: +SKIP
>>> metrics = PrometheusMetrics()
>>> lb = LoadBalancer("consul://127.0.0.1:8500", listeners=[metrics])
>>> start_http_server(9100)

Events (attempts, retries, ejections, registry answers) update counters as they happen; the
instance counts by state and the registry staleness are a snapshot taken at scrape time by a
custom collector (the Prometheus way: nothing is updated from a scrape). A series labelled
with an instance is removed when the registry drops that instance, so churn cannot grow the
exposition without bound; ``instance_label=False`` leaves the label out for services with
thousands of instances.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from itertools import accumulate

from lbclient._balancer import ServiceState
from lbclient._endpoint import Endpoint
from lbclient._exceptions import ConfigurationError, MissingDependency
from lbclient._handle import PickHandle
from lbclient._instance import ServiceInstance
from lbclient._listener import INSTANCE_STATES, LoadBalancerListener
from lbclient._observe import LATENCY_BUCKETS, outcome_label
from lbclient._outcome import Failure, Outcome

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
    from prometheus_client.samples import Sample
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency("lbclient.metrics", "prometheus") from _exc


class _Series:
    """The attempts of one (service, instance) label set: their durations as histogram
    buckets and their count by outcome, kept here and read by the scrape (one lock per attempt
    instead of one per bucket, sum and counter in prometheus_client's children)."""

    __slots__ = ("buckets", "created", "labels", "lock", "outcomes", "sum")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.lock = threading.Lock()
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        """Attempts per bucket (not cumulative); the last one is ``+Inf``."""
        self.sum = 0.0
        self.outcomes: dict[str, int] = {}
        self.created = time.time()

    def add(self, latency: float, outcome: str) -> None:
        index = bisect_left(LATENCY_BUCKETS, latency)  # the first bound >= latency: le
        with self.lock:
            self.buckets[index] += 1
            self.sum += latency
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def read(self) -> tuple[list[int], float, dict[str, int]]:
        with self.lock:
            return list(self.buckets), self.sum, dict(self.outcomes)


_ENDPOINT_CACHE = 4096
"""Endpoints remembered between registry updates at most (balancers come and go in a test
suite without one)."""


class PrometheusMetrics(LoadBalancerListener):
    """A listener exporting lbclient's metrics to a Prometheus ``CollectorRegistry``.

    Families (all prefixed ``lbclient_``): ``requests_total{service, instance, outcome}``,
    ``request_duration_seconds{service, instance}``, ``requests_in_flight{service, instance}``,
    ``retries_total{service}``, ``retries_refused_total{service}``,
    ``hedges_total{service}``, ``hedges_refused_total{service}``,
    ``instances{service, state}``, ``ejections_total{service, reason}``,
    ``registry_updates_total{service}``, ``registry_errors_total{service}`` and
    ``registry_stale_seconds{service}``. See docs/observing.md for what each one means.

    ``registry`` defaults to prometheus_client's global ``REGISTRY``; one PrometheusMetrics
    can serve any number of balancers (a service name is a label).
    """

    reads_request = False  # the attempt hooks read the instance, never the request

    def __init__(
        self, registry: CollectorRegistry | None = None, *, instance_label: bool = True
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.instance_label = instance_label
        per_attempt = ["service", "instance"] if instance_label else ["service"]
        try:
            self._create_families(self.registry, per_attempt)
        except ValueError as exc:  # prometheus_client: "Duplicated timeseries in CollectorRegistry"
            raise ConfigurationError(
                f"lbclient's metrics are already registered on {self.registry!r}: create one "
                "PrometheusMetrics per registry and pass it to every LoadBalancer, or give "
                "each its own registry=CollectorRegistry()"
            ) from exc
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}
        self._by_endpoint: dict[Endpoint, _Series] = {}
        """A cache of ``_series`` by the attempt's endpoint (an identity lookup, no label
        tuple to build); replaced by an empty one on each registry update, so it holds no
        departed endpoint for long, and ``_series`` stays the authority."""
        self._listed: dict[str, set[str]] = {}
        self._states: dict[str, dict[str, int]] = {}
        self._stale_since: dict[str, float | None] = {}
        self._circuits: dict[str, str] = {}
        self._services: weakref.WeakSet[ServiceState] = weakref.WeakSet()
        """``lbclient_requests_in_flight`` is read from these balancers' own counts at scrape
        time: nothing to update per attempt, and a departed instance leaves no series."""
        self.registry.register(_Attempts(self))
        self.registry.register(_Snapshot(self))

    def _create_families(self, r: CollectorRegistry, per_attempt: list[str]) -> None:
        self.retries = Counter(
            "lbclient_retries",
            "Failed attempts resent to another instance.",
            ["service"],
            registry=r,
        )
        self.retries_refused = Counter(
            "lbclient_retries_refused",
            "Retries the policy allowed but the retry budget refused (retry storm prevented).",
            ["service"],
            registry=r,
        )
        self.hedges = Counter(
            "lbclient_hedges",
            "Backup attempts sent for a slow request (hedged requests).",
            ["service"],
            registry=r,
        )
        self.hedges_refused = Counter(
            "lbclient_hedges_refused",
            "Hedges that were due but refused by the hedge or retry budget.",
            ["service"],
            registry=r,
        )
        self.refused = Counter(
            "lbclient_refused",
            "Calls refused without being sent, by reason: max_requests, max_pending, "
            "max_requests_per_instance (Overloaded) or circuit_open (CircuitOpen).",
            ["service", "reason"],
            registry=r,
        )
        self.ejections = Counter(
            "lbclient_ejections",
            "Instances ejected by outlier detection, by reason.",
            ["service", "reason"],
            registry=r,
        )
        self.registry_updates = Counter(
            "lbclient_registry_updates",
            "Complete instance lists received from the registry.",
            ["service"],
            registry=r,
        )
        self.registry_errors = Counter(
            "lbclient_registry_errors",
            "Failed reads of the registry (the last good list is kept).",
            ["service"],
            registry=r,
        )

    # -- per attempt -----------------------------------------------------------------------

    def _labels(self, service: str, instance: ServiceInstance) -> tuple[str, ...]:
        return (service, instance.id) if self.instance_label else (service,)

    def _get(self, labels: tuple[str, ...]) -> _Series:
        series = self._series.get(labels)
        if series is None:
            with self._lock:
                series = self._series.get(labels)
                if series is None:
                    series = self._series[labels] = _Series(labels)
        return series

    def on_attempt(self, handle: PickHandle) -> None:
        if handle.endpoint not in self._by_endpoint:
            self._enter(handle)

    def _enter(self, handle: PickHandle) -> None:
        """The first attempt on an endpoint since the last registry update: its series exist
        from now on, and its balancer is one the scrape reads in-flight counts from."""
        self._services.add(handle.state)
        if len(self._by_endpoint) >= _ENDPOINT_CACHE:
            self._by_endpoint = {}
        series = self._get(self._labels(handle.service, handle.instance))
        self._by_endpoint[handle.endpoint] = series

    def on_attempt_end(self, handle: PickHandle, outcome: Outcome) -> None:
        series = self._by_endpoint.get(handle.endpoint)
        if series is None:  # a registry update came between the attempt's start and end
            series = self._series.get(self._labels(handle.service, handle.instance))
            if series is None:  # the instance left while this attempt ran: its series are gone
                return
        series.add(outcome.latency, outcome_label(outcome))

    def on_retry(self, service: str, attempt: int, failure: Failure | None) -> None:
        self.retries.labels(service).inc()

    def on_retry_refused(self, service: str, attempt: int, failure: Failure | None) -> None:
        self.retries_refused.labels(service).inc()

    def on_hedge(self, service: str, attempt: int, instance: ServiceInstance) -> None:
        self.hedges.labels(service).inc()

    def on_hedge_refused(self, service: str, attempt: int) -> None:
        self.hedges_refused.labels(service).inc()

    def on_refused(self, service: str, reason: str) -> None:
        self.refused.labels(service, reason).inc()

    def on_circuit_state(self, service: str, state: str) -> None:
        self._circuits[service] = state

    # -- what the balancer knows -----------------------------------------------------------

    def on_ejection(
        self, service: str, instance: ServiceInstance, reason: str, detail: str
    ) -> None:
        self.ejections.labels(service, reason).inc()

    def on_instance_states(self, service: str, counts: Mapping[str, int]) -> None:
        self._states[service] = dict(counts)

    def on_registry_update(self, service: str, instances: Sequence[ServiceInstance]) -> None:
        self.registry_updates.labels(service).inc()
        self._stale_since[service] = None
        if self.instance_label:
            self._forget_departed(service, {i.id for i in instances})
        self._by_endpoint = {}

    def on_registry_error(self, service: str, error: BaseException) -> None:
        self.registry_errors.labels(service).inc()
        if self._stale_since.get(service) is None:
            self._stale_since[service] = time.time()

    def _forget_departed(self, service: str, listed: set[str]) -> None:
        """Remove the series of instances the registry no longer lists (bounded cardinality)."""
        with self._lock:
            gone = self._listed.get(service, set()) - listed
            self._listed[service] = listed
            for instance_id in gone:
                self._series.pop((service, instance_id), None)


_BOUNDS = [repr(float(bound)) for bound in LATENCY_BUCKETS] + ["+Inf"]
"""The ``le`` labels, as prometheus_client writes them ("0.001", "1.0", ...)."""


class _Attempts(Collector):
    """``lbclient_requests_total`` and ``lbclient_request_duration_seconds`` from the series
    the attempts fill (see ``_Series``)."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return list(self._families([]))

    def collect(self) -> Iterator[Metric]:
        with self._metrics._lock:
            series = list(self._metrics._series.values())
        return self._families(series)

    def _families(self, series: list[_Series]) -> Iterator[Metric]:
        labels = ["service", "instance"] if self._metrics.instance_label else ["service"]
        requests = CounterMetricFamily(
            "lbclient_requests",
            "Attempts sent to an instance, by how they ended (success or the failure kind).",
            labels=[*labels, "outcome"],
        )
        duration = HistogramMetricFamily(
            "lbclient_request_duration_seconds",
            "Duration of each attempt, from the pick to the end of the response body.",
            labels=labels,
        )
        for one in series:
            buckets, total, outcomes = one.read()
            for outcome, count in sorted(outcomes.items()):
                requests.add_metric([*one.labels, outcome], count, created=one.created)
            cumulative = zip(_BOUNDS, accumulate(buckets), strict=True)
            duration.add_metric(list(one.labels), list(cumulative), total)
            created = dict(zip(labels, one.labels, strict=True))  # as prometheus_client's own
            duration.samples.append(Sample(f"{duration.name}_created", created, one.created))
        yield requests
        yield duration


class _Snapshot(Collector):
    """``lbclient_requests_in_flight``, ``lbclient_instances``,
    ``lbclient_registry_stale_seconds`` and ``lbclient_circuit_breaker_open``, computed per
    scrape."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families({}, {}, {}, {}))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m = self._metrics
        in_flight: dict[tuple[str, ...], int] = {}
        for state in list(m._services):
            for endpoint in list(state.endpoints.values()):
                labels = m._labels(state.name, endpoint.instance)
                in_flight[labels] = in_flight.get(labels, 0) + endpoint.in_flight
        return self._families(in_flight, dict(m._states), dict(m._stale_since), dict(m._circuits))

    def _families(
        self,
        in_flight: dict[tuple[str, ...], int],
        states: dict[str, dict[str, int]],
        stale: dict[str, float | None],
        circuits: dict[str, str],
    ) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily(
            "lbclient_requests_in_flight",
            "Attempts started and not yet finished.",
            labels=["service", "instance"] if self._metrics.instance_label else ["service"],
        )
        for labels, count in sorted(in_flight.items()):
            active.add_metric(list(labels), count)
        yield active
        instances = GaugeMetricFamily(
            "lbclient_instances",
            "Instances of a service by state: usable, ejected, unhealthy, silent, filtered.",
            labels=["service", "state"],
        )
        for service, counts in sorted(states.items()):
            for state in INSTANCE_STATES:
                instances.add_metric([service, state], counts.get(state, 0))
        yield instances
        staleness = GaugeMetricFamily(
            "lbclient_registry_stale_seconds",
            "How long the instance list has been stale: seconds since the first failed "
            "registry read of the current outage; 0 once a read succeeds.",
            labels=["service"],
        )
        now = time.time()
        for service, since in sorted(stale.items()):
            staleness.add_metric([service], 0.0 if since is None else now - since)
        yield staleness
        circuit = GaugeMetricFamily(
            "lbclient_circuit_breaker_open",
            "1 while the service's circuit breaker refuses calls (open or half-open), else 0; "
            "a service appears once its breaker first changed state.",
            labels=["service", "state"],
        )
        for service, state in sorted(circuits.items()):
            circuit.add_metric([service, state], 0.0 if state == "closed" else 1.0)
        yield circuit
