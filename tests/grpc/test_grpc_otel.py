"""OpenTelemetryInstrumentation on gRPC calls (sync and aio) against real Echo servers."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
from opentelemetry.trace import SpanKind, StatusCode

import lbclient
import lbclient.grpc
import lbclient.grpc.aio

UNARY = "/lbtest.Echo/Unary"


def check_retried_call(otel: Any, backends: list[Any]) -> None:
    """Two calls over "a" (failing) and "b" by round robin, each under a caller span: one
    call went straight to "b", the other failed on "a" first, then went to "b"."""
    callers = otel.finished("caller")
    per_caller = [
        [s for s in otel.attempts() if s.parent.span_id == caller.context.span_id]
        for caller in callers
    ]
    single, (failed, ok) = sorted(per_caller, key=len)
    assert len(single) == 1
    caller = next(c for c in callers if c.context.span_id == failed.parent.span_id)
    for attempt in (failed, ok):
        assert attempt.parent.span_id == caller.context.span_id
        assert attempt.attributes["lbclient.service"] == "echo"
    assert failed.attributes["lbclient.instance.id"] == "a"
    assert failed.attributes["server.port"] == backends[0].port
    assert failed.attributes["lbclient.outcome"] == "gateway"
    assert failed.attributes["lbclient.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert failed.status.status_code is StatusCode.ERROR
    assert ok.attributes["lbclient.attempt"] == 2
    assert ok.attributes["lbclient.outcome"] == "success"
    (retry,) = [e for e in caller.events if e.name == "lbclient.retry"]
    assert retry.attributes["lbclient.attempt"] == 1
    assert otel.values("lbclient.retries", "lbclient.service") == {("echo",): 1}
    requests = otel.values("lbclient.requests", "server.port", "lbclient.outcome")
    assert requests[(backends[0].port, "gateway")] == 1
    assert requests[(backends[1].port, "success")] == 2
    assert set(otel.values("lbclient.requests.active", "server.port").values()) == {0}


def test_sync_attempt_spans_and_retry_event(echo, backends, make_lb, otel):
    lb = make_lb(backends[:2], scheduler="round_robin", listeners=[otel.instrumentation])
    backends[0].abort_code = grpc.StatusCode.UNAVAILABLE
    channel = lbclient.grpc.insecure_channel("echo", lb, idempotent={UNARY})
    stub = echo.pb2_grpc.EchoStub(channel)
    for _ in range(2):
        with otel.tracer.start_as_current_span("caller"):
            assert stub.Unary(echo.pb2.Request()).backend == "b"
    channel.close()
    check_retried_call(otel, backends)


def test_aio_attempt_spans_and_retry_event(echo, backends, make_lb, otel):
    lb = make_lb(backends[:2], scheduler="round_robin", listeners=[otel.instrumentation])
    backends[0].abort_code = grpc.StatusCode.UNAVAILABLE

    async def calls() -> list[str]:
        channel = lbclient.grpc.aio.insecure_channel("echo", lb, idempotent={UNARY})
        stub = echo.pb2_grpc.EchoStub(channel)
        answers = []
        try:
            for _ in range(2):
                with otel.tracer.start_as_current_span("caller"):
                    answers.append(str((await stub.Unary(echo.pb2.Request())).backend))
        finally:
            await channel.close()
        return answers

    assert asyncio.run(calls()) == ["b", "b"]
    check_retried_call(otel, backends)


def test_attempts_nest_under_the_grpc_instrumentation_span(echo, backends, make_lb, otel):
    lb = make_lb(backends[:1], listeners=[otel.instrumentation])
    channel = lbclient.grpc.insecure_channel("echo", lb)
    traced = intercept_channel(channel, client_interceptor(otel.tracer_provider))
    stub = echo.pb2_grpc.EchoStub(traced)
    with otel.tracer.start_as_current_span("caller"):
        assert stub.Unary(echo.pb2.Request()).backend == "a"
    channel.close()
    (attempt,) = otel.attempts()
    (rpc,) = [s for s in otel.finished() if s.kind is SpanKind.CLIENT]
    assert rpc.name == UNARY
    assert attempt.parent.span_id == rpc.context.span_id
    assert attempt.attributes["lbclient.outcome"] == "success"
