"""Deadline: how far past its deadline a call cut over black-holed instances returns.

    python benchmarks/bench_deadline.py            # about 60 s
    python benchmarks/bench_deadline.py --write    # also rewrite "## Deadline" in README.md

Every instance is a lbclient.testing.BlackHole (a listening socket that never answers: the
connection opens, the request goes out, nothing comes back), so only a timeout ends a call.
Each call is timed from the caller's side; the overshoot is the time past the deadline. In
the same run, the baseline is plain httpx with the same ``timeout=`` against one black hole
(its own read timeout: what a single attempt costs at best). Configurations:

- plain httpx, ``timeout=T`` (baseline, one attempt);
- lbclient sync and async, ``RetryPolicy(timeout=T)`` over three black holes;
- lbclient sync, ``RetryPolicy(timeout=T, per_try_timeout=T/3)``: attempts cut by the per-try
  timeout, retried, the last one cut by the deadline;
- lbclient sync without a deadline, httpx ``timeout=T``: the default three attempts, each
  waiting its full timeout (what issue 13 measured: the retries multiply the caller's timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _readme
import httpx

import lbclient
from lbclient.testing import BlackHole

HEADING = "## Deadline"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(call: Callable[[], object], calls: int) -> list[float]:
    """Seconds per call (each call must end in an httpx.TimeoutException)."""
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        try:
            call()
        except httpx.TimeoutException:
            pass
        else:
            raise AssertionError("a call over black holes answered")
        durations.append(time.perf_counter() - started)
    return durations


def run(timeout: float, calls: int) -> list[tuple[str, list[float]]]:
    holes = [BlackHole() for _ in range(3)]
    addresses = [h.address for h in holes]
    lb = lbclient.LoadBalancer({"orders": addresses}, outlier=None)
    deadline = lbclient.RetryPolicy(timeout=timeout)
    per_try = lbclient.RetryPolicy(timeout=timeout, per_try_timeout=timeout / 3)
    results: list[tuple[str, list[float]]] = []
    try:
        with httpx.Client(timeout=timeout) as plain:
            url = f"http://{addresses[0]}/"
            results.append(
                ("plain httpx, one attempt (baseline)", timed(lambda: plain.get(url), calls))
            )
        for name, policy in (
            ("lbclient sync, deadline", deadline),
            ("lbclient sync, deadline + per-try", per_try),
        ):
            transport = lbclient.LoadBalancedTransport(lb, retry=policy)
            with httpx.Client(transport=transport, timeout=30) as client:
                results.append((name, timed(lambda: client.get("http://orders/"), calls)))
        results.append(("lbclient async, deadline", asyncio.run(_async(lb, deadline, calls))))
        transport = lbclient.LoadBalancedTransport(lb)
        with httpx.Client(transport=transport, timeout=timeout) as client:
            few = max(3, calls // 6)
            results.append(
                (
                    "lbclient sync, no deadline (3 attempts)",
                    timed(lambda: client.get("http://orders/"), few),
                )
            )
    finally:
        lb.close()
        for hole in holes:
            hole.close()
    return results


async def _async(
    lb: lbclient.LoadBalancer, policy: lbclient.RetryPolicy, calls: int
) -> list[float]:
    transport = lbclient.AsyncLoadBalancedTransport(lb, retry=policy)
    durations = []
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        for _ in range(calls):
            started = time.perf_counter()
            with contextlib.suppress(httpx.TimeoutException):
                await client.get("http://orders/")
            durations.append(time.perf_counter() - started)
    return durations


def report(timeout: float, calls: int, results: list[tuple[str, list[float]]]) -> str:
    baseline = statistics.median(results[0][1]) - timeout
    lines = [
        HEADING,
        "",
        f"Command: `python benchmarks/bench_deadline.py` (Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d')}).",
        "",
        "Calls over black-holed instances (they accept and never answer) with a "
        f"{timeout * 1000:.0f} ms timeout, {calls} sequential calls per row (fewer for the "
        "last); overshoot = call time minus the timeout, in ms; the last column compares the "
        "p50 overshoot with plain httpx's own single timeout in the same run. A shared 2-core "
        "machine: single values can be off by several ms.",
        "",
        "| configuration | p50 overshoot | p99 overshoot | max | p50 ratio to baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, durations in results:
        over = [d - timeout for d in durations]
        p50 = statistics.median(over)
        ratio = p50 / baseline if baseline > 0 else float("nan")
        lines.append(
            f"| {name} | {p50 * 1000:.1f} | {percentile(over, 0.99) * 1000:.1f} | "
            f"{max(over) * 1000:.1f} | {ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=0.25)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--write", action="store_true", help="rewrite the README section")
    args = parser.parse_args()
    text = report(args.timeout, args.calls, run(args.timeout, args.calls))
    print(text)
    if args.write:
        _readme.write_section(HEADING, text)


if __name__ == "__main__":
    main()
