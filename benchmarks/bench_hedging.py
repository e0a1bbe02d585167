"""Hedging: tail latency when a random request is slow, with and without hedged requests.

    python benchmarks/bench_hedging.py            # 2 rounds of 2 runs of 8 s, ~45 s
    python benchmarks/bench_hedging.py --write    # also rewrite "## Hedging" in README.md
    python benchmarks/bench_hedging.py --sync     # also the sync transport, ~90 s

Ten backends (lbclient.testing.BackendProcess: a child process, loopback only) answer in
``BASE_DELAY``, but each request independently takes ``SLOWDOWN`` times as long with
probability ``TAIL_RATE``: the slow request is random, not an instance, so no scheduler can
avoid it. An asyncio client keeps ``CONCURRENCY`` requests in flight through one
AsyncLoadBalancedTransport for ``RUN`` seconds, once without hedging (the baseline) and
once with ``HedgePolicy(delay="p95")``, interleaved in ``ROUNDS`` rounds and pooled, after a
``WARMUP`` that is not measured (it fills the latency histogram the percentile reads).
Extra load is the attempts the balancer sent beyond one per request (every attempt counts,
the cancelled losers included), from ``lb.stats()``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _readme
import httpx

import lbclient
from lbclient.testing import BackendProcess, BackendSpec

HEADING = "## Hedging"
BACKENDS = 10
BASE_DELAY = 0.03
SLOWDOWN = 40
TAIL_RATE = 0.02
CONCURRENCY = 12
WARMUP = 1.0
RUN = 8.0
ROUNDS = 2


@dataclass
class Result:
    label: str
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    attempts: int = 0
    hedges: int = 0
    refused: int = 0
    delays: list[float] = field(default_factory=list)
    """The hedge delay (the tracked p95) at the end of each run."""

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def extra(self) -> float:
        """Attempts beyond one per request, as a share of requests."""
        return self.attempts / len(self.latencies) - 1

    def add(self, other: Result) -> None:
        self.latencies += other.latencies
        self.seconds += other.seconds
        self.attempts += other.attempts
        self.hedges += other.hedges
        self.refused += other.refused
        self.delays += other.delays


async def run(label: str, addresses: list[str], hedge: lbclient.HedgePolicy | None) -> Result:
    """One run through AsyncLoadBalancedTransport, CONCURRENCY tasks."""
    lb = lbclient.LoadBalancer({"svc": addresses}, hedge=hedge)
    result = Result(label)
    transport = lbclient.AsyncLoadBalancedTransport(lb)
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as client:

        async def worker(end: float, latencies: list[float] | None) -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                response = await client.get("http://svc/work")
                response.raise_for_status()
                if latencies is not None:
                    latencies.append(time.perf_counter() - started)

        warm_end = time.monotonic() + WARMUP
        await asyncio.gather(*(worker(warm_end, None) for _ in range(CONCURRENCY)))
        before = lb.stats("svc")
        started = time.monotonic()
        await asyncio.gather(*(worker(started + RUN, result.latencies) for _ in range(CONCURRENCY)))
        result.seconds = time.monotonic() - started
    return _collect(result, lb, hedge, before)


def run_sync(label: str, addresses: list[str], hedge: lbclient.HedgePolicy | None) -> Result:
    """One run through LoadBalancedTransport, CONCURRENCY threads."""
    lb = lbclient.LoadBalancer({"svc": addresses}, hedge=hedge)
    result = Result(label)
    transport = lbclient.LoadBalancedTransport(lb)
    with httpx.Client(transport=transport, timeout=10.0) as client:

        def worker(end: float, latencies: list[float] | None) -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                client.get("http://svc/work").raise_for_status()
                if latencies is not None:
                    latencies.append(time.perf_counter() - started)

        def phase(end: float, latencies: list[float] | None) -> None:
            threads = [
                threading.Thread(target=worker, args=(end, latencies)) for _ in range(CONCURRENCY)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        phase(time.monotonic() + WARMUP, None)
        before = lb.stats("svc")
        started = time.monotonic()
        phase(started + RUN, result.latencies)
        result.seconds = time.monotonic() - started
    return _collect(result, lb, hedge, before)


def _collect(
    result: Result,
    lb: lbclient.LoadBalancer,
    hedge: lbclient.HedgePolicy | None,
    before: dict[str, Any],
) -> Result:
    """Attempts, hedges and the hedge delay of a run, from the balancer's stats."""
    after = lb.stats("svc")
    if hedge is not None:
        result.delays.append(lb.service("svc").hedges.get(hedge).delay() or 0.0)
    lb.close()
    result.attempts = _picks(after) - _picks(before)
    result.hedges = after["hedges"] - before["hedges"]
    result.refused = after["hedges_refused_by_budget"] - before["hedges_refused_by_budget"]
    return result


def _picks(stats: dict[str, object]) -> int:
    return sum(row["picks"] for row in stats["instances"])  # type: ignore[attr-defined,misc]


P95 = lbclient.HedgePolicy(delay="p95")
CONFIGURATIONS: list[tuple[str, lbclient.HedgePolicy | None, bool]] = [
    ("no hedging (baseline)", None, False),
    ('hedging, `HedgePolicy(delay="p95")`', P95, False),
]
SYNC_CONFIGURATIONS: list[tuple[str, lbclient.HedgePolicy | None, bool]] = [
    ("sync, no hedging", None, True),
    ('sync, hedging, `HedgePolicy(delay="p95")`', P95, True),
]


async def main_async(sync: bool) -> list[Result]:
    specs = [
        BackendSpec(
            f"b{i}",
            delay=BASE_DELAY,
            tail_rate=TAIL_RATE,
            tail_delay=BASE_DELAY * SLOWDOWN,
            seed=i,
        )
        for i in range(BACKENDS)
    ]
    configurations = CONFIGURATIONS + (SYNC_CONFIGURATIONS if sync else [])
    pooled = {label: Result(label) for label, _, _ in configurations}
    with BackendProcess(specs) as servers:
        addresses = list(servers.addresses.values())
        for _ in range(ROUNDS):
            for label, hedge, threads in configurations:
                if threads:
                    result = await asyncio.to_thread(run_sync, label, addresses, hedge)
                else:
                    result = await run(label, addresses, hedge)
                pooled[label].add(result)
    return [pooled[label] for label, _, _ in configurations]


def table(results: list[Result]) -> str:
    """Rows come in pairs, baseline then hedged: each is compared with its pair's baseline."""
    lines = [
        "| run | requests | requests/s | p50 ms | p99 ms | p99.9 ms | extra load | hedges sent "
        "| hedges refused by the budget | hedge delay ms | p99 / baseline p99 "
        "| p99.9 / baseline p99.9 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for index, r in enumerate(results):
        base = results[index - index % 2]
        lines.append(
            f"| {r.label} | {len(r.latencies):,} | {len(r.latencies) / r.seconds:,.0f} "
            f"| {r.pct(0.5) * 1000:.1f} | {r.pct(0.99) * 1000:.1f} | {r.pct(0.999) * 1000:.1f} "
            f"| {r.extra:.1%} | {r.hedges:,} | {r.refused:,} "
            f"| {' / '.join(f'{d * 1000:.0f}' for d in r.delays) or '-'} "
            f"| {r.pct(0.99) / base.pct(0.99):.2f} | {r.pct(0.999) / base.pct(0.999):.2f} |"
        )
    return "\n".join(lines)


def sync_note(results: list[Result]) -> str:
    if len(results) <= len(CONFIGURATIONS):
        return ""
    return (
        f"; the sync rows (`--sync`) send from {CONCURRENCY} threads through "
        "LoadBalancedTransport, compared with their own baseline"
    )


def section(results: list[Result]) -> str:
    return "\n".join(
        [
            HEADING,
            "",
            f"Command: `python benchmarks/bench_hedging.py"
            f"{' --sync' if sync_note(results) else ''}` (Python {sys.version.split()[0]}, "
            f"{time.strftime('%Y-%m-%d')}).",
            "",
            f"{BACKENDS} backends in a child process answer in {BASE_DELAY * 1000:g} ms, but each "
            f"request independently takes {SLOWDOWN}x as long ({BASE_DELAY * SLOWDOWN * 1000:g} "
            f"ms) with probability {TAIL_RATE:.0%}. An asyncio client keeps {CONCURRENCY} "
            f"requests in flight for {RUN:g} s per run (after {WARMUP:g} s of warm-up, not "
            f"measured), {ROUNDS} interleaved rounds pooled, round_robin"
            f"{sync_note(results)}. Extra load: attempts "
            "sent beyond one per request (cancelled losers included). Ratios against the "
            "baseline of the same invocation; a shared 2-core machine.",
            "",
            table(results),
            "",
            (
                "Reading it: the hedge leaves when an attempt has not answered by the "
                "service's p95, so a slow request costs about p95 plus one normal answer "
                "instead of the slow answer; in a closed loop the workers freed from slow "
                "answers also send more requests per second. The extra load stays under the "
                "5% budget (Finagle's `maxExtraLoad`): the p95 is read as its histogram "
                "bucket's upper edge (up to 10% high) and the window holds the loaded "
                "machine's own jitter, so somewhat fewer than 5% of requests wait past it. "
                "A hedge the budget refuses would leave a slow request slow (p99.9)."
            ),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update benchmarks/README.md")
    parser.add_argument(
        "--sync",
        action="store_true",
        help="also measure LoadBalancedTransport from threads (about twice as long)",
    )
    args = parser.parse_args()
    text = section(asyncio.run(main_async(args.sync)))
    print(text)
    if args.write:
        _readme.write_section(HEADING, text)


if __name__ == "__main__":
    main()
