"""Slow backend (Linkerd's "Beyond Round Robin", scaled to one machine).

    python benchmarks/bench_slow_backend.py            # 3 rounds of 4 runs of 6 s, ~80 s
    python benchmarks/bench_slow_backend.py --write    # also rewrite "## Slow backend" and
                                                       # draw slow_backend.svg

Ten backends, each its own process (lbclient.testing.ControlledBackend), answer after
``BASE_DELAY``. An asyncio client keeps ``CONCURRENCY`` requests in flight through one
AsyncLoadBalancedTransport for ``RUN`` seconds per scheduler; from ``SLOW_FROM`` to
``SLOW_UNTIL`` one backend answers 20x slower. Latency percentiles are over every request
of the run (as in Linkerd's post), for round_robin, least_request and peak_ewma, and for an
all-healthy round_robin run as the baseline, all in the same process. Ratios are each p99
against the all-healthy p99 and against round_robin's p99 with the slow backend.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _charts
import _readme
import httpx

import lbclient
from lbclient.testing._process import ControlledBackend

HEADING = "## Slow backend"
CHART = "slow_backend.svg"
BACKENDS = 10
BASE_DELAY = 0.02
SLOWDOWN = 20
CONCURRENCY = 10
RUN = 6.0
SLOW_FROM = 1.0
SLOW_UNTIL = 5.0
ROUNDS = 3
"""Each configuration runs once per round, interleaved, and its samples are pooled: on a shared
machine the load of other processes then weighs on every configuration alike."""


@dataclass
class Result:
    label: str
    latencies: list[float]
    seconds: float
    slow_share: float

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(label: str, scheduler: str, backends: list[ControlledBackend], slow: bool) -> Result:
    lb = lbclient.LoadBalancer(
        {"svc": [b.address for b in backends]}, scheduler=scheduler, outlier=None
    )
    transport = lbclient.AsyncLoadBalancedTransport(lb)
    latencies: list[float] = []
    victim = backends[0]
    on_victim = 0
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as client:
        started = time.monotonic()
        end = started + RUN

        async def worker() -> None:
            nonlocal on_victim
            while time.monotonic() < end:
                t0 = time.perf_counter()
                response = await client.get("http://svc/work")
                latencies.append(time.perf_counter() - t0)
                if response.headers.get("X-Backend") == victim.name:
                    on_victim += 1

        async def slowdown() -> None:
            if not slow:
                return
            await asyncio.sleep(SLOW_FROM)
            await asyncio.to_thread(victim.set_delay, BASE_DELAY * SLOWDOWN)
            await asyncio.sleep(SLOW_UNTIL - SLOW_FROM)
            await asyncio.to_thread(victim.set_delay, BASE_DELAY)

        await asyncio.gather(slowdown(), *(worker() for _ in range(CONCURRENCY)))
        seconds = time.monotonic() - started
    lb.close()
    return Result(label, latencies, seconds, on_victim / max(1, len(latencies)))


def table(results: list[Result]) -> str:
    healthy = results[0].pct(0.99)
    rr = next(r for r in results if r.label.startswith("round_robin")).pct(0.99)
    lines = [
        "| run | requests/s | p50 ms | p99 ms | p99.9 ms | share on the slow backend "
        "| p99 / all-healthy p99 | p99 / round_robin p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p99 = r.pct(0.99)
        lines.append(
            f"| {r.label} | {len(r.latencies) / r.seconds:,.0f} | {r.pct(0.5) * 1000:.1f} "
            f"| {p99 * 1000:.1f} | {r.pct(0.999) * 1000:.1f} | {r.slow_share:.1%} "
            f"| {p99 / healthy:.2f} | {p99 / rr:.2f} |"
        )
    return "\n".join(lines)


def section(results: list[Result]) -> str:
    return "\n".join(
        [
            HEADING,
            "",
            f"Command: `python benchmarks/bench_slow_backend.py` (Python "
            f"{sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}).",
            "",
            f"{BACKENDS} backends in their own processes answer in {BASE_DELAY * 1000:g} ms; "
            f"an asyncio client keeps {CONCURRENCY} requests in flight for {RUN:g} s per run, "
            f"{ROUNDS} interleaved rounds pooled; "
            f"from {SLOW_FROM:g} s to {SLOW_UNTIL:g} s one backend answers {SLOWDOWN}x slower "
            f"({BASE_DELAY * SLOWDOWN * 1000:g} ms). Percentiles over every request of the run; "
            "ratios against the all-healthy run and the round_robin run of the same "
            "invocation. Outlier detection off (the slow backend never fails; this measures "
            "the schedulers). Measured on a shared 2-core machine: absolute numbers move with "
            "the load of other processes, the ratios much less.",
            "",
            table(results),
            "",
            f"![Latency distribution of each run]({CHART})",
            "",
            (
                "Reading it: peak_ewma avoids the slow backend within a few requests and keeps "
                "p99 near the all-healthy run; round_robin sends it a tenth of the traffic, so "
                "p99 is the slow latency. least_request lowers the share but not p99 at this "
                "concurrency: with about one request in flight per backend, the slow one often "
                "ties with a fast one."
            ),
            "",
        ]
    )


def write_section(text: str) -> None:
    _readme.write_section(HEADING, text)


CONFIGURATIONS = [
    ("all healthy (round_robin)", "round_robin", False),
    ("round_robin, one slow", "round_robin", True),
    ("least_request, one slow", "least_request", True),
    ("peak_ewma, one slow", "peak_ewma", True),
]


async def main_async() -> list[Result]:
    backends = [ControlledBackend(f"b{i}", delay=BASE_DELAY).start() for i in range(BACKENDS)]
    pooled: dict[str, Result] = {}
    try:
        for _ in range(ROUNDS):
            for label, scheduler, slow in CONFIGURATIONS:
                result = await run(label, scheduler, backends, slow=slow)
                total = pooled.setdefault(label, Result(label, [], 0.0, 0.0))
                on_slow = total.slow_share * len(total.latencies)
                on_slow += result.slow_share * len(result.latencies)
                total.latencies.extend(result.latencies)
                total.seconds += result.seconds
                total.slow_share = on_slow / len(total.latencies)
        return [pooled[label] for label, _, _ in CONFIGURATIONS]
    finally:
        for backend in backends:
            backend.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update benchmarks/README.md")
    args = parser.parse_args()
    results = asyncio.run(main_async())
    text = section(results)
    print(text)
    if args.write:
        write_section(text)
        _charts.latency_distributions(
            CHART,
            {r.label: r.latencies for r in results},
            f"Request latency, {BACKENDS} backends, one {SLOWDOWN}x slower for "
            f"{SLOW_UNTIL - SLOW_FROM:g} s of each {RUN:g} s run",
        )


if __name__ == "__main__":
    main()
