"""Overload: the upstream's capacity drops 10x while the offered load stays the same.

    python benchmarks/bench_overload.py            # about 45 s
    python benchmarks/bench_overload.py --write    # also rewrite "## Overload" in README.md

The upstream is a real HTTP server on loopback with a pool of workers in front of a fixed
service time (a request takes ``--service`` seconds on a worker; requests beyond the pool
wait for one, as in any worker-pool server). An asyncio caller sends requests at a constant
rate (open loop: a new task every 1/rate s, whatever happened to the previous ones) through
AsyncLoadBalancedTransport. Each run has a healthy phase, then a degraded phase where the
pool shrinks 10x (40 workers to 4: a tenth of the throughput, so at the offered load the
upstream is 10x slower than it needs to be), then capacity comes back so the backlog drains.

Three runs, same load, same upstream:

- no limits (lbclient's default): every call is sent; the upstream's backlog, the callers'
  latency and the number of the caller's live tasks grow for as long as the overload lasts;
- ``max_requests=6, max_pending=2, pending_timeout=0.01``: sized at 1.2x the healthy
  concurrency (rate x service time = 5); a call finding no slot waits up to 10 ms, then
  is refused with Overloaded;
- ``max_requests=6`` alone (``max_pending=0``): every excess call is refused at once, which
  times the refusals themselves.

Reported per run and phase: admitted calls and their p50/p99 latency (ratio to the healthy
p99 of the same run), refusals and their p99 latency, and the peak number of live caller
tasks. Why a capacity drop and not a 10x longer service time: with every request 10x
slower, an admitted request takes 10x by definition and no client-side limit can change
that; the limit then only bounds the caller's tasks and the upstream's backlog (the run
with ``--mode service`` shows it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _readme
import httpx

import lbclient
from lbclient.testing._server import ProtocolHandler, QuietHTTPServer

HEADING = "## Overload"


class Pool:
    """The upstream's workers: at most ``size`` requests served at once, the others wait."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self.waiting = 0
        self.peak_waiting = 0
        self._cond = threading.Condition()

    def resize(self, size: int) -> None:
        with self._cond:
            self.size = size
            self._cond.notify_all()

    def __enter__(self) -> None:
        with self._cond:
            self.waiting += 1
            self.peak_waiting = max(self.peak_waiting, self.waiting)
            while self.busy >= self.size:
                self._cond.wait()
            self.waiting -= 1
            self.busy += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self.busy -= 1
            self._cond.notify()


class Upstream:
    """A threading HTTP server in a process of its own (so that its threads never take the
    caller's interpreter lock), whose handler holds a worker of ``pool`` for ``service`` s.
    ``/control?size=N&service=S`` changes them; ``/control`` answers the peak backlog."""

    def __init__(self, service: float, size: int = 40) -> None:
        receiver, sender = multiprocessing.Pipe(duplex=False)
        self.process = multiprocessing.Process(
            target=_serve, args=(sender, service, size), daemon=True
        )
        self.process.start()
        self.address = f"127.0.0.1:{receiver.recv()}"
        self._control = httpx.Client(base_url=f"http://{self.address}", timeout=10)

    def control(self, **settings: float) -> dict[str, float]:
        answer: dict[str, float] = self._control.get("/control", params=settings).json()
        return answer

    def close(self) -> None:
        self._control.close()
        self.process.terminate()
        self.process.join(5)


def _serve(ready: Any, service: float, size: int) -> None:
    pool = Pool(size)
    settings = {"service": service}

    class Handler(ProtocolHandler):
        def serve(self) -> None:
            if self.path.startswith("/control"):
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if "size" in query:
                    pool.resize(int(query["size"][0]))
                if "service" in query:
                    settings["service"] = float(query["service"][0])
                self._answer({"backlog": pool.peak_waiting})
                return
            with pool:
                time.sleep(settings["service"])
            self._answer({"ok": True})

        def _answer(self, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    class Server(QuietHTTPServer):
        request_queue_size = 4096

    server = Server(("127.0.0.1", 0), Handler)
    ready.send(server.server_address[1])
    server.serve_forever()


@dataclass
class Phase:
    admitted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    """Seconds to the Overloaded of calls refused at once (no place to wait)."""
    waited: int = 0
    """Calls refused after waiting ``pending_timeout`` in the queue."""
    errors: int = 0
    peak_tasks: int = 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(
    lb: lbclient.LoadBalancer,
    upstream: Upstream,
    *,
    rate: float,
    healthy: float,
    degraded: float,
    mode: str,
    service: float,
) -> dict[str, Phase]:
    phases = {"warm-up": Phase(), "healthy": Phase(), "degraded": Phase()}
    # httpx's own pool limit (100 connections) would queue calls before lbclient sees them.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    transport = lbclient.AsyncLoadBalancedTransport(
        lb, lambda: httpx.AsyncHTTPTransport(limits=limits)
    )
    live: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(transport=transport, timeout=120) as client:

        async def one(phase: Phase) -> None:
            started = time.perf_counter()
            try:
                response = await client.get("http://orders/work")
                response.raise_for_status()
            except lbclient.Overloaded as exc:
                if exc.limit == "max_pending":
                    phase.waited += 1
                else:
                    phase.refused.append(time.perf_counter() - started)
                return
            except Exception:
                phase.errors += 1
                return
            phase.admitted.append(time.perf_counter() - started)

        interval = 1.0 / rate
        start = time.perf_counter()
        end_warmup = start + 1.0  # connections opened, server threads started: not measured
        end_healthy = end_warmup + healthy
        end = end_healthy + degraded
        switched = False
        sent = 0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if not switched and now >= end_healthy:
                switched = True
                if mode == "capacity":
                    upstream.control(size=4)
                else:
                    upstream.control(service=service * 10)
            phase = phases[
                "degraded" if switched else "healthy" if now >= end_warmup else "warm-up"
            ]
            task = asyncio.create_task(one(phase))
            live.add(task)
            task.add_done_callback(live.discard)
            phase.peak_tasks = max(phase.peak_tasks, len(live))
            sent += 1
            delay = start + sent * interval - time.perf_counter()
            await asyncio.sleep(max(delay, 0))
        upstream.control(size=40, service=service)  # capacity comes back: the backlog drains
        phases["degraded"].peak_tasks = max(phases["degraded"].peak_tasks, len(live))
        if live:
            await asyncio.wait(live)
    return phases


def run(args: argparse.Namespace) -> list[tuple[str, dict[str, Phase], int]]:
    results = []
    for name, settings in (
        ("no limits (default)", {}),
        (
            "max_requests=6, max_pending=2",
            {"max_requests": 6, "max_pending": 2, "pending_timeout": 0.01},
        ),
        ("max_requests=6, no queue", {"max_requests": 6}),
    ):
        upstream = Upstream(args.service)
        lb = lbclient.LoadBalancer(
            {"orders": [upstream.address]},
            outlier=None,
            retry=lbclient.RetryPolicy(attempts=1),
            **settings,
        )
        try:
            phases = asyncio.run(
                drive(
                    lb,
                    upstream,
                    rate=args.rate,
                    healthy=args.healthy,
                    degraded=args.degraded,
                    mode=args.mode,
                    service=args.service,
                )
            )
            backlog = int(upstream.control()["backlog"])
        finally:
            lb.close()
            upstream.close()
        results.append((name, phases, backlog))
    return results


async def refusal_cost(calls: int = 3000) -> list[float]:
    """Seconds per refused call, one after the other on an idle event loop: what a refusal
    itself costs, without the other tasks of the runs above around it."""
    upstream = Upstream(0.001)
    lb = lbclient.LoadBalancer({"orders": [upstream.address]}, max_requests=1)
    durations = []
    try:
        transport = lbclient.AsyncLoadBalancedTransport(lb)
        async with httpx.AsyncClient(transport=transport) as client:
            held = await client.send(client.build_request("GET", "http://orders/x"), stream=True)
            for _ in range(calls):
                started = time.perf_counter()
                try:
                    await client.get("http://orders/x")
                except lbclient.Overloaded:
                    durations.append(time.perf_counter() - started)
            await held.aclose()
    finally:
        lb.close()
        upstream.close()
    return durations


def report(
    args: argparse.Namespace,
    results: list[tuple[str, dict[str, Phase], int]],
    alone: list[float],
) -> str:
    what = (
        "the upstream's worker pool shrinks 10x (40 to 4)"
        if args.mode == "capacity"
        else "every request takes 10x as long"
    )
    flag = " --mode service" if args.mode != "capacity" else ""
    lines = [
        HEADING,
        "",
        f"Command: `python benchmarks/bench_overload.py{flag}` "
        f"(Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}).",
        "",
        f"An asyncio caller sends {args.rate:.0f} requests/s (open loop) to one upstream whose "
        f"requests take {args.service * 1000:.0f} ms on one of its workers; after "
        f"{args.healthy:.0f} s healthy, {what} for {args.degraded:.0f} s (at this load the "
        "upstream can then serve 4/5 of what is asked). Latencies in ms, from the caller; "
        "the p99 ratio compares with the healthy p99 of the same run; tasks = the caller's "
        "live tasks at most; backlog = requests waiting for a worker in the upstream, at most. "
        "A shared 2-core machine (other jobs running): single values can be off by "
        "several ms, a refusal's p99 included (the process is preempted).",
        "",
        "| run | phase | admitted | p50 | p99 | p99 / healthy p99 | refused at once "
        "| its p50 / p99 | refused after waiting | errors | tasks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, phases, backlog in results:
        healthy_p99 = percentile(phases["healthy"].admitted, 0.99)
        for phase_name, phase in phases.items():
            if phase_name == "warm-up":
                continue
            p99 = percentile(phase.admitted, 0.99)
            refusal = (
                f"{percentile(phase.refused, 0.5) * 1000:.2f} / "
                f"{percentile(phase.refused, 0.99) * 1000:.2f}"
                if phase.refused
                else "-"
            )
            lines.append(
                f"| {name} | {phase_name} | {len(phase.admitted)} | "
                f"{statistics.median(phase.admitted) * 1000:.1f} | {p99 * 1000:.1f} | "
                f"{p99 / healthy_p99:.2f} | {len(phase.refused)} | {refusal} | "
                f"{phase.waited} | {phase.errors} | {phase.peak_tasks} |"
            )
        lines.append(f"| {name} | upstream backlog, at most | {backlog} | | | | | | | | |")
    lines += [
        "",
        f"A refusal alone ({len(alone)} in a row on an idle loop, `Overloaded` from "
        f"`max_requests`): p50 {percentile(alone, 0.5) * 1e6:.0f} us, p99 "
        f"{percentile(alone, 0.99) * 1e6:.0f} us.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--service", type=float, default=0.05)
    parser.add_argument("--healthy", type=float, default=4.0)
    parser.add_argument("--degraded", type=float, default=8.0)
    parser.add_argument("--mode", choices=["capacity", "service"], default="capacity")
    parser.add_argument("--write", action="store_true", help="rewrite the README section")
    args = parser.parse_args()
    text = report(args, run(args), asyncio.run(refusal_cost()))
    print(text)
    if args.write:
        _readme.write_section(HEADING, text)


if __name__ == "__main__":
    main()
