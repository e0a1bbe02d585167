"""OpenTelemetryInstrumentation on httpx traffic (sync and async), with the in-memory SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import SpanKind, StatusCode

import lbclient
from lbclient._observe import LATENCY_BUCKETS
from lbclient.testing import HTTPBackend

SERVICE = "orders"


def send(mode: str, lb: lbclient.LoadBalancer, otel: Any, *, instrument: bool = False) -> int:
    """One GET to the service inside a caller span (and the httpx client span if asked)."""
    if mode == "sync":
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
            if instrument:
                HTTPXClientInstrumentor.instrument_client(client, otel.tracer_provider)
            with otel.tracer.start_as_current_span("caller"):
                return client.get(f"http://{SERVICE}/x").status_code

    async def run() -> int:
        transport = lbclient.AsyncLoadBalancedTransport(lb)
        async with httpx.AsyncClient(transport=transport) as client:
            if instrument:
                HTTPXClientInstrumentor.instrument_client(client, otel.tracer_provider)
            with otel.tracer.start_as_current_span("caller"):
                return (await client.get(f"http://{SERVICE}/x")).status_code

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_one_span_per_attempt_under_the_callers_span(mode: str, otel: Any) -> None:
    with HTTPBackend("bad") as bad, HTTPBackend("good") as good:
        bad.status = 503
        lb = lbclient.LoadBalancer(
            {SERVICE: [{"address": b.address, "id": b.name} for b in (bad, good)]},
            scheduler="round_robin",
            outlier=lbclient.OutlierDetection(consecutive_5xx=1, base_ejection_time=300),
            listeners=[otel.instrumentation],
        )
        statuses = [send(mode, lb, otel) for _ in range(2)]
        lb.close()
    assert statuses == [200, 200]
    callers = otel.finished("caller")
    per_caller = [
        sorted(
            (s for s in otel.attempts() if s.parent.span_id == caller.context.span_id),
            key=lambda s: s.attributes["lbclient.attempt"],
        )
        for caller in callers
    ]
    # Round robin starts on either instance: the request that met "bad" has two attempts.
    single, double = sorted(per_caller, key=len)
    assert len(single) == 1
    assert len(double) == 2
    failed, ok = double
    assert failed.kind is SpanKind.INTERNAL
    assert failed.attributes["lbclient.attempt"] == 1
    assert failed.attributes["lbclient.instance.id"] == "bad"
    assert failed.attributes["server.port"] == bad.port
    assert failed.attributes["lbclient.outcome"] == "gateway"
    assert failed.attributes["lbclient.status_code"] == 503
    assert failed.status.status_code is StatusCode.ERROR
    assert ok.attributes["lbclient.attempt"] == 2
    assert ok.attributes["http.request.resend_count"] == 1
    assert ok.attributes["lbclient.outcome"] == "success"
    assert ok.attributes["server.port"] == good.port
    assert ok.context.trace_id == failed.context.trace_id
    caller = next(c for c in callers if c.context.span_id == failed.parent.span_id)
    events = {e.name: dict(e.attributes) for e in caller.events}
    assert events["lbclient.retry"]["lbclient.attempt"] == 1
    assert events["lbclient.retry"]["lbclient.failure"] == "gateway"
    assert events["lbclient.ejection"]["lbclient.reason"] == "consecutive_5xx"
    assert events["lbclient.ejection"]["lbclient.instance"] == "bad"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_instruments_measure_attempts_retries_and_states(mode: str, otel: Any) -> None:
    with HTTPBackend("bad") as bad, HTTPBackend("good") as good:
        bad.status = 503
        lb = lbclient.LoadBalancer(
            {SERVICE: [bad.address, good.address]},
            scheduler="round_robin",
            outlier=None,
            listeners=[otel.instrumentation],
        )
        for _ in range(4):
            assert send(mode, lb, otel) == 200
        requests = otel.values("lbclient.requests", "server.port", "lbclient.outcome")
        assert requests == {(bad.port, "gateway"): 2, (good.port, "success"): 4}
        assert otel.values("lbclient.retries", "lbclient.service") == {(SERVICE,): 2}
        assert set(otel.values("lbclient.requests.active", "server.port").values()) == {0}
        durations = otel.points("lbclient.request.duration")
        assert sum(p.count for p in durations) == 6
        assert list(durations[0].explicit_bounds) == list(LATENCY_BUCKETS)
        states = otel.values("lbclient.instances", "lbclient.instance.state")
        assert states[("usable",)] == 2
        assert states[("ejected",)] == 0
        assert otel.values("lbclient.registry.staleness", "lbclient.service") == {(SERVICE,): 0.0}
        assert otel.values("lbclient.registry.updates", "lbclient.service") == {(SERVICE,): 1}
        lb.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_attempts_nest_under_the_httpx_instrumentation_span(mode: str, otel: Any) -> None:
    with HTTPBackend("a") as a:
        lb = lbclient.LoadBalancer({SERVICE: [a.address]}, listeners=[otel.instrumentation])
        assert send(mode, lb, otel, instrument=True) == 200
        lb.close()
    (attempt,) = otel.finished("lbclient.attempt")
    (client_span,) = [s for s in otel.finished() if s.kind is SpanKind.CLIENT]
    (caller,) = otel.finished("caller")
    assert attempt.parent.span_id == client_span.context.span_id
    assert client_span.parent.span_id == caller.context.span_id


def test_a_spent_budget_is_an_event_and_a_count(otel: Any) -> None:
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        a.status = b.status = 503
        lb = lbclient.LoadBalancer(
            {SERVICE: [a.address, b.address]},
            outlier=None,
            retry=lbclient.RetryPolicy(budget_ratio=0, budget_min_per_second=0),
            listeners=[otel.instrumentation],
        )
        assert [send("sync", lb, otel) for _ in range(2)] == [503, 503]
        lb.close()
    assert otel.values("lbclient.retries.refused", "lbclient.service") == {(SERVICE,): 2}
    refused = [e for c in otel.finished("caller") for e in c.events if "refused" in e.name]
    assert [e.attributes["lbclient.attempt"] for e in refused] == [2, 1]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_hedge_is_an_event_a_count_and_an_attempt_span_under_the_caller(
    mode: str, otel: Any
) -> None:
    with HTTPBackend("slow", delay=5.0) as slow, HTTPBackend("fast") as fast:
        lb = lbclient.LoadBalancer(
            {SERVICE: [{"address": slow.address, "id": "slow"}, fast.address]},
            outlier=None,
            hedge=lbclient.HedgePolicy(delay=0.02, budget_ratio=1.0, budget_cap=10),
            listeners=[otel.instrumentation],
        )
        assert [send(mode, lb, otel) for _ in range(2)] == [200, 200]  # one lands on slow
        lb.close()
        slow.delay = 0
    assert otel.values("lbclient.hedges", "lbclient.service")[(SERVICE,)] >= 1
    callers = otel.finished("caller")
    hedges = [e for c in callers for e in c.events if e.name == "lbclient.hedge"]
    assert hedges
    caller_ids = {c.context.span_id for c in callers}
    attempts = [s for s in otel.finished() if s.name not in ("caller",)]
    assert attempts
    assert all(s.parent is not None and s.parent.span_id in caller_ids for s in attempts)


def test_no_lone_attempt_traces_unless_asked(otel: Any) -> None:
    from lbclient.otel import OpenTelemetryInstrumentation

    roots = OpenTelemetryInstrumentation(otel.meter_provider, otel.tracer_provider, root_spans=True)
    with HTTPBackend("a") as a:
        for listeners, expected in (([otel.instrumentation], 0), ([roots], 1)):
            lb = lbclient.LoadBalancer({SERVICE: [a.address]}, listeners=listeners)
            with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
                assert client.get(f"http://{SERVICE}/x").status_code == 200  # no caller span
            lb.close()
            assert len(otel.finished("lbclient.attempt")) == expected
    (root,) = otel.finished("lbclient.attempt")
    assert root.parent is None
