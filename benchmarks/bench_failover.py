"""Failover: 5 backends under closed-loop load, one crashes mid-run and comes back.

    python benchmarks/bench_failover.py            # four configurations, about 70 s
    python benchmarks/bench_failover.py --write    # also rewrite "## Failover" in README.md
                                                   # and draw failover.svg

Each backend is its own process (lbclient.testing.ControlledBackend), so a crash is real:
SIGKILL, every connection reset, the port refusing. Four client threads send idempotent GETs
through one LoadBalancedTransport (round_robin, retries on: the default RetryPolicy) for the
whole run. Backend 0 is killed ``KILL_AT`` seconds in and restarted ``DOWN_FOR`` seconds
later. Reported per configuration, all in the same run:

- failed requests: what the caller saw (an exception or a non-200), out of all requests;
- attempts sent to the dead backend while it was down (retries included), and that count as
  a ratio to the no-outlier baseline;
- time from the restart until the backend answered a request again.

Configurations: no outlier detection (the baseline: round robin keeps trying the dead one),
least_request without it (a dead backend fails fast, so it always looks least loaded), the
defaults (passive outlier ejection, Envoy's 30 s base ejection), and the defaults plus
an HTTP health check every 0.5 s (a passing probe readmits an ejected instance at once).

Last, the price of having outlier detection on by default: the CPU time of one pick plus its
completion (the request path's own work, no I/O) with and without it, as a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _charts
import _readme
import httpx

import lbclient
from lbclient.health import HttpHealthCheck
from lbclient.testing._process import ControlledBackend

HEADING = "## Failover"
CHART = "failover.svg"
BACKENDS = 5
THREADS = 4
KILL_AT = 2.0
DOWN_FOR = 3.0
MAX_WAIT_AFTER_RESTART = 40.0
"""The run ends this long after the restart at the latest (the default ejection is 30 s)."""
TAIL = 1.0


class Recorder(lbclient.LoadBalancerListener):
    """Counts attempts on the victim while it is down and its first success after restart."""

    def __init__(self, victim: str) -> None:
        self.victim = victim
        self.killed_at: float | None = None
        self.restarted_at: float | None = None
        self.dead_attempts = 0
        self.back_at: float | None = None
        self.attempts: dict[str, list[float]] = {}
        """Completion times of the attempts on each instance (for the chart)."""
        self._lock = threading.Lock()

    def on_pick(self, service: str, instance: Any, context: Any) -> None:
        if instance.id == self.victim and self.killed_at is not None and self.restarted_at is None:
            with self._lock:
                self.dead_attempts += 1

    def on_complete(self, service: str, instance: Any, outcome: lbclient.Outcome) -> None:
        self.attempts.setdefault(instance.id, []).append(time.monotonic())
        if (
            instance.id == self.victim
            and outcome.ok
            and self.restarted_at is not None
            and self.back_at is None
        ):
            self.back_at = time.monotonic()


@dataclass
class Result:
    label: str
    requests: int
    failed: int
    dead_attempts: int
    back_after: float | None
    seconds: float
    timeline: dict[str, list[float]]
    """Attempt times per backend name, in seconds since the start of the run."""
    failures: list[float]
    """When callers saw a failed request, in seconds since the start of the run."""
    killed_at: float
    restarted_at: float


def run(label: str, **settings: Any) -> Result:
    backends = [ControlledBackend(f"b{i}").start() for i in range(BACKENDS)]
    victim = backends[0]
    recorder = Recorder(victim.address)
    lb = lbclient.LoadBalancer(
        {"svc": [b.address for b in backends]}, listeners=[recorder], **settings
    )
    client = httpx.Client(transport=lbclient.LoadBalancedTransport(lb), timeout=5.0)
    stop = threading.Event()
    counts = {"requests": 0, "failed": 0}
    failures: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        ok = failed = 0
        while not stop.is_set():
            try:
                response = client.get("http://svc/work")
                if response.status_code == 200:
                    ok += 1
                else:
                    failed += 1
                    failures.append(time.monotonic())
            except Exception:
                failed += 1
                failures.append(time.monotonic())
        with lock:
            counts["requests"] += ok + failed
            counts["failed"] += failed

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        time.sleep(KILL_AT)
        recorder.killed_at = time.monotonic()
        victim.kill()
        time.sleep(DOWN_FOR)
        victim.start()
        recorder.restarted_at = time.monotonic()
        deadline = recorder.restarted_at + MAX_WAIT_AFTER_RESTART
        while recorder.back_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(TAIL)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        client.close()
        lb.close()
        for backend in backends:
            backend.stop()
    back = None if recorder.back_at is None else recorder.back_at - recorder.restarted_at
    names = {b.address: b.name for b in backends}
    assert recorder.killed_at is not None
    assert recorder.restarted_at is not None
    return Result(
        label,
        counts["requests"],
        counts["failed"],
        recorder.dead_attempts,
        back,
        time.monotonic() - started,
        {names[i]: [t - started for t in times] for i, times in recorder.attempts.items()},
        [t - started for t in failures],
        recorder.killed_at - started,
        recorder.restarted_at - started,
    )


def feedback_cost(rounds: int = 5, picks: int = 20_000) -> tuple[float, float]:
    """Best thread-CPU seconds per pick+done, without and with outlier detection."""

    def measure(**settings: Any) -> float:
        lb = lbclient.LoadBalancer({"svc": [f"127.0.0.1:{p}" for p in range(1, 6)]}, **settings)
        state = lb.service("svc")
        best = float("inf")
        for _ in range(rounds):
            start = time.thread_time()
            for _ in range(picks):
                with state.pick():
                    pass
            best = min(best, (time.thread_time() - start) / picks)
        lb.close()
        return best

    return measure(outlier=None), measure()


def table(results: list[Result]) -> str:
    baseline = results[0].dead_attempts or 1
    lines = [
        "| configuration | requests (per s) | failed | attempts on the dead backend (ratio) "
        "| back in traffic after restart |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        back = "never (run ended)" if r.back_after is None else f"{r.back_after:.2f} s"
        lines.append(
            f"| {r.label} | {r.requests:,} ({r.requests / r.seconds:,.0f}) | {r.failed} | "
            f"{r.dead_attempts:,} ({r.dead_attempts / baseline:.3f}) | {back} |"
        )
    return "\n".join(lines)


def section(results: list[Result], cost: tuple[float, float]) -> str:
    without, with_outlier = cost
    return "\n".join(
        [
            HEADING,
            "",
            f"Command: `python benchmarks/bench_failover.py` (Python "
            f"{sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}).",
            "",
            f"{BACKENDS} backends, each its own process; {THREADS} client threads send GETs in a "
            "closed loop through `LoadBalancedTransport` (round_robin, default retries); "
            f"backend 0 is SIGKILLed {KILL_AT:g} s in and restarted {DOWN_FOR:g} s later. "
            "Ratio: attempts on the dead backend against the no-outlier baseline of the same "
            "run. Measured on a shared 2-core machine.",
            "",
            table(results),
            "",
            f"![Attempts per backend around the crash, per configuration]({CHART})",
            "",
            (
                "Reading it: retries hide the crash from callers in every configuration. Without "
                "outlier detection round robin keeps sending a fifth of all attempts to the dead "
                "backend, each a connect error plus a retry, and least_request does no better (a "
                "dead backend fails at once, so it rarely has requests in flight to count against "
                "it; when retries outrun the retry budget, callers see the errors); passive "
                "ejection stops that after 5 "
                "consecutive failures. The default ejection (Envoy's 30 s base) keeps a restarted "
                "backend out until it expires; with an active health check a passing probe "
                "readmits it within about one probe interval."
            ),
            "",
            f"Request-path cost of the default outlier detection: pick + completion takes "
            f"{with_outlier * 1e6:.2f} us of CPU with it and {without * 1e6:.2f} us without "
            f"(ratio {with_outlier / without:.2f}), against hundreds of microseconds for a "
            "loopback HTTP request.",
            "",
        ]
    )


def write_section(text: str) -> None:
    _readme.write_section(HEADING, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update benchmarks/README.md")
    args = parser.parse_args()
    results = [
        run("no outlier detection (baseline)", outlier=None),
        run("least_request, no outlier detection", outlier=None, scheduler="least_request"),
        run("defaults: outlier ejection"),
        run(
            "defaults + HttpHealthCheck every 0.5 s",
            health_check=HttpHealthCheck("/health", interval=0.5),
        ),
    ]
    text = section(results, feedback_cost())
    print(text)
    if args.write:
        write_section(text)
        _charts.failover_timelines(
            CHART,
            [(r.label, r.timeline, r.failures) for r in results],
            statistics.median(r.killed_at for r in results),
            statistics.median(r.restarted_at for r in results),
        )


if __name__ == "__main__":
    main()
