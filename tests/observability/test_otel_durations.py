"""``lbclient.request.duration``: every attempt counted once, batched or not, in any thread."""

from __future__ import annotations

import threading
from typing import Any

import httpx

import lbclient
from lbclient.otel import OpenTelemetryInstrumentation
from lbclient.testing import HTTPBackend

SERVICE = "orders"
THREADS = 8
PER_THREAD = OpenTelemetryInstrumentation.DURATION_BATCH * 3 + 5
"""Not a multiple of the batch: some durations are still waiting at collection time."""
WAITING = OpenTelemetryInstrumentation.DURATION_BATCH - 1


def durations(otel: Any) -> int:
    return sum(p.count for p in otel.points("lbclient.request.duration"))


def test_untraced_attempts_from_many_threads_are_all_counted_at_collection(otel: Any) -> None:
    with HTTPBackend("a") as a:
        lb = lbclient.LoadBalancer({SERVICE: [a.address]}, listeners=[otel.instrumentation])
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
            start = threading.Barrier(THREADS)

            def send() -> None:
                start.wait()
                for _ in range(PER_THREAD):
                    client.get(f"http://{SERVICE}/x").raise_for_status()

            threads = [threading.Thread(target=send) for _ in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert durations(otel) == THREADS * PER_THREAD
            client.get(f"http://{SERVICE}/x").raise_for_status()
            assert durations(otel) == THREADS * PER_THREAD + 1  # cumulative, nothing twice
        lb.close()
    requests = otel.values("lbclient.requests", "lbclient.outcome")
    assert requests == {("success",): THREADS * PER_THREAD + 1}


def test_a_traced_attempt_is_an_exemplar_of_its_own_trace_and_an_untraced_one_of_none(
    otel: Any,
) -> None:
    with HTTPBackend("a") as a:
        lb = lbclient.LoadBalancer({SERVICE: [a.address]}, listeners=[otel.instrumentation])
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
            with otel.tracer.start_as_current_span("caller") as caller:
                client.get(f"http://{SERVICE}/x").raise_for_status()
            for _ in range(WAITING):  # still waiting when the collection below runs
                client.get(f"http://{SERVICE}/x").raise_for_status()
            with otel.tracer.start_as_current_span("flusher") as flusher:  # must not lend its trace
                points = otel.points("lbclient.request.duration")
        lb.close()
    assert sum(p.count for p in points) == 1 + WAITING
    traces = {e.trace_id for p in points for e in p.exemplars if e.trace_id}
    assert traces == {caller.get_span_context().trace_id}
    assert flusher.get_span_context().trace_id not in traces
