"""PrometheusMetrics scraped from a real prometheus_client HTTP endpoint under real traffic."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import lbclient
from lbclient.metrics import PrometheusMetrics
from lbclient.testing import HTTPBackend

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Endpoint:
    """A registry served by ``start_http_server`` on loopback, scraped over HTTP."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"

    def scrape(self) -> tuple[dict[str, str], Samples]:
        """(family name → type, (sample name, labels) → value)."""
        text = httpx.get(self.url).text
        types: dict[str, str] = {}
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return types, samples

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape()[1].get((name, frozenset(labels.items())))

    def wait(self, name: str, test: Callable[[float | None], bool], **labels: str) -> float | None:
        deadline = time.monotonic() + 20
        while True:
            value = self.value(name, **labels)
            if test(value):
                return value
            assert time.monotonic() < deadline, f"{name}{labels} stayed at {value}"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def endpoint(registry: CollectorRegistry) -> Iterator[Endpoint]:
    served = Endpoint(registry)
    yield served
    served.close()


def get(lb: lbclient.LoadBalancer, n: int, *, mode: str = "sync") -> list[int]:
    if mode == "sync":
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
            return [client.get("http://orders/x").status_code for _ in range(n)]

    async def run() -> list[int]:
        transport = lbclient.AsyncLoadBalancedTransport(lb)
        async with httpx.AsyncClient(transport=transport) as client:
            return [(await client.get("http://orders/x")).status_code for _ in range(n)]

    return asyncio.run(run())


FAMILIES = {
    "lbclient_requests": "counter",
    "lbclient_request_duration_seconds": "histogram",
    "lbclient_requests_in_flight": "gauge",
    "lbclient_retries": "counter",
    "lbclient_retries_refused": "counter",
    "lbclient_hedges": "counter",
    "lbclient_hedges_refused": "counter",
    "lbclient_instances": "gauge",
    "lbclient_ejections": "counter",
    "lbclient_registry_updates": "counter",
    "lbclient_registry_errors": "counter",
    "lbclient_registry_stale_seconds": "gauge",
    "lbclient_refused": "counter",
    "lbclient_circuit_breaker_open": "gauge",
}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_families_under_traffic_with_retries_and_an_ejection(
    registry: CollectorRegistry, endpoint: Endpoint, mode: str
) -> None:
    metrics = PrometheusMetrics(registry)
    with HTTPBackend("bad") as bad, HTTPBackend("good") as good:
        bad.status = 503
        lb = lbclient.LoadBalancer(
            {"orders": [{"address": bad.address, "id": "bad"}, good.address]},
            scheduler="round_robin",
            outlier=lbclient.OutlierDetection(consecutive_5xx=2, base_ejection_time=300),
            listeners=[metrics],
        )
        assert get(lb, 10, mode=mode) == [200] * 10
        types, samples = endpoint.scrape()
        lb.close()
    assert {name: types.get(name) for name in FAMILIES} == FAMILIES
    good_id = good.address
    ok = samples[("lbclient_requests_total", frozenset(
        {("service", "orders"), ("instance", good_id), ("outcome", "success")}))]  # fmt: skip
    assert ok == 10
    failed = samples[("lbclient_requests_total", frozenset(
        {("service", "orders"), ("instance", "bad"), ("outcome", "gateway")}))]  # fmt: skip
    assert failed == 2  # then ejected
    assert samples[("lbclient_retries_total", frozenset({("service", "orders")}))] == 2
    ejections = frozenset({("service", "orders"), ("reason", "consecutive_5xx")})
    assert samples[("lbclient_ejections_total", ejections)] == 1
    for state, count in {"usable": 1, "ejected": 1, "unhealthy": 0, "silent": 0}.items():
        key = ("lbclient_instances", frozenset({("service", "orders"), ("state", state)}))
        assert samples[key] == count, state
    per_good = frozenset({("service", "orders"), ("instance", good_id)})
    assert samples[("lbclient_request_duration_seconds_count", per_good)] == 10
    buckets = [
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "lbclient_request_duration_seconds_bucket" and per_good < labels
    ]
    assert [le for le, _ in sorted(buckets)][-1] == float("inf")
    counts = [value for _, value in sorted(buckets)]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == 10  # all within +Inf
    assert 0 < samples[("lbclient_request_duration_seconds_sum", per_good)] < 10 * 20
    assert samples[("lbclient_requests_in_flight", per_good)] == 0
    assert samples[("lbclient_registry_updates_total", frozenset({("service", "orders")}))] == 1
    assert samples[("lbclient_registry_stale_seconds", frozenset({("service", "orders")}))] == 0


def test_in_flight_follows_a_slow_request(registry: CollectorRegistry, endpoint: Endpoint) -> None:
    metrics = PrometheusMetrics(registry, instance_label=False)
    with HTTPBackend("slow") as slow:
        lb = lbclient.LoadBalancer({"orders": [slow.address]}, listeners=[metrics])
        release = threading.Event()
        slow.delay = 0.3
        worker = threading.Thread(target=lambda: (get(lb, 1), release.set()))
        worker.start()
        endpoint.wait("lbclient_requests_in_flight", lambda v: v == 1, service="orders")
        release.wait(20)
        worker.join(20)
        assert endpoint.value("lbclient_requests_in_flight", service="orders") == 0
        lb.close()
    _, samples = endpoint.scrape()
    labels = {dict(key[1]).get("instance") for key in samples}
    assert labels == {None}  # instance_label=False: no instance label anywhere


def test_budget_refusals(registry: CollectorRegistry, endpoint: Endpoint) -> None:
    metrics = PrometheusMetrics(registry)
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        a.status = b.status = 503
        lb = lbclient.LoadBalancer(
            {"orders": [a.address, b.address]},
            outlier=None,
            retry=lbclient.RetryPolicy(budget_ratio=0, budget_min_per_second=0),
            listeners=[metrics],
        )
        assert get(lb, 4) == [503] * 4
        lb.close()
    assert endpoint.value("lbclient_retries_total", service="orders") == 1
    assert endpoint.value("lbclient_retries_refused_total", service="orders") == 4


def test_hedges_and_their_refusals(registry: CollectorRegistry, endpoint: Endpoint) -> None:
    metrics = PrometheusMetrics(registry)
    with HTTPBackend("slow", delay=0.3) as slow, HTTPBackend("fast") as fast:
        lb = lbclient.LoadBalancer(
            {"orders": [{"address": slow.address, "id": "slow"}, fast.address]},
            scheduler="round_robin",
            outlier=None,
            hedge=lbclient.HedgePolicy(delay=0.02, budget_ratio=0, budget_cap=1),
            listeners=[metrics],
        )
        assert get(lb, 4) == [200] * 4  # two land on the slow one: one hedged, one refused
        stats = lb.stats("orders")
        lb.close()
    assert endpoint.value("lbclient_hedges_total", service="orders") == stats["hedges"] >= 1
    refused = stats["hedges_refused_by_budget"]
    assert endpoint.value("lbclient_hedges_refused_total", service="orders") == refused >= 1


def test_registry_errors_staleness_and_departed_instances(
    registry: CollectorRegistry, endpoint: Endpoint, tmp_path: Path
) -> None:
    metrics = PrometheusMetrics(registry)
    path = tmp_path / "services.json"
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        path.write_text(json.dumps({"orders": [a.address, b.address]}))
        lb = lbclient.LoadBalancer(
            lbclient.StaticRegistry.from_file(path, reload_interval=0.05), listeners=[metrics]
        )
        get(lb, 4)
        assert (
            endpoint.value("lbclient_requests_in_flight", service="orders", instance=b.address) == 0
        )
        path.write_text("{broken")
        endpoint.wait("lbclient_registry_errors_total", lambda v: (v or 0) >= 1, service="orders")
        endpoint.wait("lbclient_registry_stale_seconds", lambda v: (v or 0) > 0, service="orders")
        path.write_text(json.dumps({"orders": [a.address]}))
        endpoint.wait("lbclient_registry_stale_seconds", lambda v: v == 0, service="orders")
        _, samples = endpoint.scrape()
        lb.close()
    instances = {dict(labels).get("instance") for _, labels in samples}
    assert a.address in instances
    assert b.address not in instances  # its series were removed with it
    updates = samples[("lbclient_registry_updates_total", frozenset({("service", "orders")}))]
    assert updates >= 2


def test_a_second_exporter_on_the_same_registry_is_a_clear_error(
    registry: CollectorRegistry,
) -> None:
    PrometheusMetrics(registry)
    with pytest.raises(lbclient.ConfigurationError, match="one PrometheusMetrics per registry"):
        PrometheusMetrics(registry)


def test_an_instance_leaving_mid_request_leaves_no_series(
    registry: CollectorRegistry, endpoint: Endpoint, tmp_path: Path
) -> None:
    metrics = PrometheusMetrics(registry)
    path = tmp_path / "services.json"
    with HTTPBackend("slow") as slow, HTTPBackend("other") as other:
        slow.delay = 1.0
        path.write_text(json.dumps({"orders": [slow.address]}))
        lb = lbclient.LoadBalancer(
            lbclient.StaticRegistry.from_file(path, reload_interval=0.05), listeners=[metrics]
        )
        worker = threading.Thread(target=get, args=(lb, 1))
        worker.start()
        endpoint.wait("lbclient_requests_in_flight", lambda v: v == 1, service="orders",
                      instance=slow.address)  # fmt: skip
        path.write_text(json.dumps({"orders": [other.address]}))
        endpoint.wait("lbclient_requests_in_flight", lambda v: v is None, service="orders",
                      instance=slow.address)  # fmt: skip
        worker.join(20)
        _, samples = endpoint.scrape()
        lb.close()
    assert slow.address not in {dict(labels).get("instance") for _, labels in samples}


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("lbclient.metrics", "prometheus_client", "prometheus"),
        ("lbclient.otel", "opentelemetry", "otel"),
    ],
)
def test_a_missing_extra_says_what_to_install(module: str, blocked: str, extra: str) -> None:
    import subprocess
    import sys

    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import lbclient\n"
        f"try:\n    import {module}\n"
        "except lbclient.MissingDependency as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"pip install 'lbclient[{extra}]'" in done.stdout


def test_refusals_and_the_circuit_breaker_state(
    registry: CollectorRegistry, endpoint: Endpoint
) -> None:
    metrics = PrometheusMetrics(registry)
    with HTTPBackend("a") as backend:
        lb = lbclient.LoadBalancer(
            {"orders": [backend.address]},
            max_requests=1,
            retry=lbclient.RetryPolicy(attempts=1),
            circuit_breaker=lbclient.CircuitBreaker(minimum_calls=2, window=2, open_for=60),
            listeners=[metrics],
        )
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
            held = client.send(client.build_request("GET", "http://orders/x"), stream=True)
            with pytest.raises(lbclient.Overloaded):
                client.get("http://orders/x")
            held.close()
            backend.status = 503  # with the held call's success: 1 of 2 failed, it opens
            assert client.get("http://orders/x").status_code == 503
            with pytest.raises(lbclient.CircuitOpen):
                client.get("http://orders/x")
        _, samples = endpoint.scrape()
        lb.close()
    for reason in ("max_requests", "circuit_open"):
        key = frozenset({("service", "orders"), ("reason", reason)})
        assert samples[("lbclient_refused_total", key)] == 1, reason
    state = frozenset({("service", "orders"), ("state", "open")})
    assert samples[("lbclient_circuit_breaker_open", state)] == 1
