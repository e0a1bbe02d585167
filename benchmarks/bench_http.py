"""httpx overhead: requests per second through the load-balanced transports vs plain httpx.

    python benchmarks/bench_http.py [--rounds 21] [--requests 100] [--exporters] [--hint]

One HTTP backend runs in a child process (lbclient.testing.BackendProcess), so it does not
share this interpreter's lock. Each round sends ``--requests`` GETs over keep-alive
connections with a plain client and with a balanced client (default settings, one instance),
in alternating order, and the ratio of their rates is taken per round: slow drifts of a shared
machine hit both sides of a round alike, and the median over many short rounds discards the
rounds a neighbour's burst landed on. Two ratios are reported: requests per wall-clock second
(>= 0.95 is the target: the balancer costs under 5% of a loopback request) and requests per
CPU-second of this process (the client's own cost, which is what the balancer adds to; far
less sensitive to other load on the machine). Sync (httpx.Client) and async
(httpx.AsyncClient, one task, and 8 concurrent tasks) are measured the same way.
Last, the balancer's own cost per request: the transports' ``handle_request`` against an
in-memory inner transport (no I/O), minus that transport alone, in a tight loop (best of 7).
With ``--hint``, the balanced client runs with one request-aware rule (``hint_header``, the
instance carrying the matching ``hint`` metadata) and both clients send the hint header: the
cost of the routing stage when used (target >= 0.93).
Bounded: about (rounds + 1) x 6 x requests requests in all, plus 2 x 80,000 in memory; stops
by itself.

``--exporters`` measures the same with both exporters on every balancer: PrometheusMetrics
and OpenTelemetryInstrumentation on the OpenTelemetry SDK (every span sampled and handed to a
batch processor, metrics aggregated for a reader), the setup of a traced production service.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx

import lbclient
from lbclient.testing import BackendProcess, BackendSpec

Rates = tuple[float, float]
"""(requests per wall-clock second, requests per CPU-second of this process)"""
SyncRun = Callable[[int], Rates]
AsyncRun = Callable[[int], Awaitable[Rates]]


HINT_HEADER = "X-SC-LB-Hint"
HINT = False
"""Set by ``--hint``: one hint rule configured, and the header sent by both clients."""


def balancer(address: str, exporters: bool) -> lbclient.LoadBalancer:
    """The balancer under test: one instance, default settings, exporters if asked, one hint
    rule with ``--hint``."""
    listeners = make_exporters() if exporters else ()
    if not HINT:
        return lbclient.LoadBalancer({"bench": [address]}, listeners=listeners)
    entry = {"address": address, "metadata": {"hint": "blue"}}
    return lbclient.LoadBalancer({"bench": [entry]}, listeners=listeners, hint_header=HINT_HEADER)


def headers() -> dict[str, str]:
    """Headers both clients send (the hint with ``--hint``, so both pay for the header)."""
    return {HINT_HEADER: "blue"} if HINT else {}


def make_exporters() -> list[lbclient.LoadBalancerListener]:
    """PrometheusMetrics and OpenTelemetryInstrumentation, each on its own fresh providers."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from prometheus_client import CollectorRegistry

    from lbclient.metrics import PrometheusMetrics
    from lbclient.otel import OpenTelemetryInstrumentation

    class Discard(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return [
        PrometheusMetrics(CollectorRegistry()),
        OpenTelemetryInstrumentation(meter_provider, tracer_provider),
    ]


def rates(count: int, wall: float, cpu: float) -> Rates:
    return count / wall, count / max(cpu, 1e-9)


def sync_runner(client: httpx.Client, url: str) -> SyncRun:
    def run(count: int) -> Rates:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            client.get(url).raise_for_status()
        return rates(count, time.perf_counter() - wall, time.process_time() - cpu)

    return run


def async_runner(client: httpx.AsyncClient, url: str, tasks: int) -> AsyncRun:
    async def run(count: int) -> Rates:
        async def worker(share: int) -> None:
            for _ in range(share):
                (await client.get(url)).raise_for_status()

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(count // tasks) for _ in range(tasks)))
        done = count // tasks * tasks
        return rates(done, time.perf_counter() - wall, time.process_time() - cpu)

    return run


Ratios = list[tuple[float, float]]


def ratio(balanced: Rates, plain: Rates) -> tuple[float, float]:
    return balanced[0] / plain[0], balanced[1] / plain[1]


def rounds_sync(plain: SyncRun, balanced: SyncRun, rounds: int, count: int) -> Ratios:
    plain(count // 3), balanced(count // 3)  # warm up connections and code paths
    ratios = []
    for index in range(rounds):
        if index % 2:
            b, p = balanced(count), plain(count)
        else:
            p, b = plain(count), balanced(count)
        ratios.append(ratio(b, p))
    return ratios


async def rounds_async(plain: AsyncRun, balanced: AsyncRun, rounds: int, count: int) -> list[float]:
    await plain(count // 3)
    await balanced(count // 3)
    ratios = []
    for index in range(rounds):
        if index % 2:
            b = await balanced(count)
            p = await plain(count)
        else:
            p = await plain(count)
            b = await balanced(count)
        ratios.append(ratio(b, p))
    return ratios


def report(name: str, ratios: Ratios, target: float) -> str:
    wall = [r[0] for r in ratios]
    cpu = [r[1] for r in ratios]
    median = statistics.median(wall)
    verdict = "yes" if median >= target else "NO"
    quartiles = statistics.quantiles(wall, n=4)
    return (
        f"| {name} | {median:.3f} | {quartiles[0]:.3f}-{quartiles[2]:.3f} | "
        f"{statistics.median(cpu):.3f} | {verdict} |"
    )


async def measure_async(
    address: str, rounds: int, count: int, tasks: int, exporters: bool
) -> Ratios:
    lb = balancer(address, exporters)
    transport = lbclient.AsyncLoadBalancedTransport(lb)
    async with (
        httpx.AsyncClient(headers=headers()) as plain_client,
        httpx.AsyncClient(transport=transport, headers=headers()) as lb_client,
    ):
        plain = async_runner(plain_client, f"http://{address}/bench", tasks)
        balanced = async_runner(lb_client, "http://bench/bench", tasks)
        ratios = await rounds_async(plain, balanced, rounds, count)
    lb.close()
    return ratios


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"ok"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"ok"


class _InMemory(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers 200 at once; the body is a stream, as from a real transport."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "2"}, stream=_Body())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self.handle_request(request)


def own_cost(exporters: bool, count: int = 5000, repeats: int = 7) -> tuple[float, float]:
    """Microseconds the balanced transports add per request (sync, async), no I/O."""
    inner = _InMemory()
    lb = balancer("127.0.0.1:1", exporters)
    sync_lb = lbclient.LoadBalancedTransport(lb, inner)
    async_lb = lbclient.AsyncLoadBalancedTransport(lb, inner)
    with httpx.Client(headers=headers()) as client:
        direct = client.build_request("GET", "http://127.0.0.1:1/bench")
        balanced = client.build_request("GET", "http://bench/bench")

    def sync_run(transport: httpx.BaseTransport, request: httpx.Request) -> float:
        start = time.perf_counter()
        for _ in range(count):
            transport.handle_request(request).close()
        return (time.perf_counter() - start) / count * 1e6

    async def async_run(transport: httpx.AsyncBaseTransport, request: httpx.Request) -> float:
        start = time.perf_counter()
        for _ in range(count):
            await (await transport.handle_async_request(request)).aclose()
        return (time.perf_counter() - start) / count * 1e6

    async def async_cost() -> float:
        plain = min([await async_run(inner, direct) for _ in range(repeats)])
        return min([await async_run(async_lb, balanced) for _ in range(repeats)]) - plain

    sync = min(sync_run(sync_lb, balanced) for _ in range(repeats)) - min(
        sync_run(inner, direct) for _ in range(repeats)
    )
    result = sync, asyncio.run(async_cost())
    lb.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument(
        "--exporters",
        action="store_true",
        help="with PrometheusMetrics and OpenTelemetryInstrumentation (SDK) on the balancer",
    )
    parser.add_argument("--hint", action="store_true", help="one hint rule on (target 0.93)")
    args = parser.parse_args()
    global HINT
    HINT = args.hint
    target = 0.90 if args.exporters else 0.93 if args.hint else 0.95

    with BackendProcess([BackendSpec("bench")]) as servers:
        address = servers.addresses["bench"]
        lb = balancer(address, args.exporters)
        transport = lbclient.LoadBalancedTransport(lb)
        with (
            httpx.Client(headers=headers()) as plain_client,
            httpx.Client(transport=transport, headers=headers()) as lb_client,
        ):
            sync = rounds_sync(
                sync_runner(plain_client, f"http://{address}/bench"),
                sync_runner(lb_client, "http://bench/bench"),
                args.rounds,
                args.requests,
            )
        lb.close()
        single = asyncio.run(measure_async(address, args.rounds, args.requests, 1, args.exporters))
        concurrent = asyncio.run(
            measure_async(address, args.rounds, args.requests, 8, args.exporters)
        )

    print(
        f"Balanced / plain httpx, requests per second ({args.rounds} alternating rounds of "
        f"{args.requests} requests, one loopback backend in a child process"
        f"{', with both exporters' if args.exporters else ''}"
        f"{', one hint rule on' if args.hint else ''})\n"
    )
    print(
        "| client | req/s ratio (median) | req/s ratio (quartiles) | CPU ratio (median) "
        f"| >= {target:.2f} |"
    )
    print("|---|---|---|---|---|")
    print(report("httpx.Client (sync)", sync, target))
    print(report("httpx.AsyncClient, 1 task", single, target))
    print(report("httpx.AsyncClient, 8 tasks", concurrent, target))
    sync_us, async_us = own_cost(args.exporters)
    print(
        f"\nThe balancer's own cost per request (in-memory inner transport, no I/O): "
        f"{sync_us:.1f} us sync, {async_us:.1f} us async"
    )


if __name__ == "__main__":
    main()
