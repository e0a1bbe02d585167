"""``lbclient demo``: real backends on loopback, a few thousand requests per scheduler, tables.

The backends run in a child process (BackendProcess) so that they do not compete with the
client for the interpreter lock; one is slow and one answers 503 to a share of requests, so
the schedulers have something to tell apart. Each scheduler gets a fresh LoadBalancer and an
async client driving ``concurrency`` requests at a time. Output uses rich when it is installed
(the ``[cli]`` extra) and plain text otherwise; both go through the small ``Report`` interface.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import httpx

from lbclient._balancer import LoadBalancer
from lbclient._instance import ServiceInstance
from lbclient._listener import LoadBalancerListener
from lbclient._outcome import Outcome
from lbclient.registry.static import StaticRegistry
from lbclient.schedulers import available_schedulers
from lbclient.testing._http import BackendProcess, BackendSpec
from lbclient.transport._async import AsyncLoadBalancedTransport

DEFAULT_SCHEDULERS = (
    "round_robin",
    "random",
    "least_request",
    "peak_ewma",
    "weighted_round_robin",
)


@dataclasses.dataclass(frozen=True)
class DemoBackend:
    """One backend of the demo: how it behaves and the weight the registry gives it."""

    spec: BackendSpec
    weight: float
    role: str


BACKENDS = (
    DemoBackend(BackendSpec("fast-1", delay=0.002), 2, "fast"),
    DemoBackend(BackendSpec("fast-2", delay=0.002), 2, "fast"),
    DemoBackend(BackendSpec("fast-3", delay=0.002), 2, "fast"),
    DemoBackend(BackendSpec("slow", delay=0.1), 1, "slow: +100 ms"),
    DemoBackend(
        BackendSpec("flaky", delay=0.002, fail_rate=0.2, fail_status=503, seed=7),
        1,
        "flaky: 20% 503",
    ),
)


def percentile(samples: Sequence[float], share: float) -> float:
    """The ``share`` quantile (0-1) of ``samples``, nearest rank; 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class AttemptRecorder(LoadBalancerListener):
    """Collects every attempt's latency and failure per instance, through the listener hook."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.failures: dict[str, int] = defaultdict(int)

    def on_complete(self, service: str, instance: ServiceInstance, outcome: Outcome) -> None:
        self.latencies[instance.id].append(outcome.latency)
        if outcome.failure is not None:
            self.failures[instance.id] += 1


@dataclasses.dataclass
class BackendRow:
    """What one backend saw: every attempt sent to it (first tries and retries alike)."""

    name: str
    role: str
    attempts: int
    failures: int
    p50_ms: float
    p99_ms: float


@dataclasses.dataclass
class SchedulerResult:
    """``requests`` the caller sent; ``errors`` of them failed for the caller (after retries);
    ``attempts`` (per backend in ``rows``) include the retries."""

    scheduler: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    rows: list[BackendRow]

    @property
    def attempts(self) -> int:
        return sum(row.attempts for row in self.rows)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def share(self, role_prefix: str) -> float:
        matching = sum(row.attempts for row in self.rows if row.role.startswith(role_prefix))
        return matching / self.attempts if self.attempts else 0.0


async def run_scheduler(
    scheduler: str,
    addresses: dict[str, str],
    *,
    requests: int,
    concurrency: int,
    advance: Callable[[int], None],
) -> SchedulerResult:
    """Send ``requests`` GETs through a fresh balancer using ``scheduler``; never raises."""
    recorder = AttemptRecorder()
    entries = [
        {"address": addresses[b.spec.name], "id": b.spec.name, "weight": b.weight} for b in BACKENDS
    ]
    lb = LoadBalancer(StaticRegistry({"demo": entries}), scheduler=scheduler, listeners=[recorder])
    inner = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=concurrency * 2)
    )
    latencies: list[float] = []
    errors = 0
    todo = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for _ in todo:
            started = time.perf_counter()
            try:
                response = await client.get("http://demo/work")
                failed = response.status_code >= 500
            except httpx.HTTPError:
                failed = True
            latencies.append(time.perf_counter() - started)
            errors += failed
            advance(1)

    started = time.perf_counter()
    transport = AsyncLoadBalancedTransport(lb, inner)
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    lb.close()
    rows = []
    for backend in BACKENDS:
        samples = recorder.latencies.get(backend.spec.name, [])
        rows.append(
            BackendRow(
                backend.spec.name,
                backend.role,
                len(samples),
                recorder.failures.get(backend.spec.name, 0),
                percentile(samples, 0.5) * 1000,
                percentile(samples, 0.99) * 1000,
            )
        )
    return SchedulerResult(
        scheduler,
        requests,
        errors,
        seconds,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        rows,
    )


def backend_table(result: SchedulerResult) -> tuple[list[str], list[list[str]]]:
    header = ["backend", "behaviour", "attempts", "share", "failed attempts", "p50 ms", "p99 ms"]
    total = result.attempts or 1
    rows = [
        [
            row.name,
            row.role,
            str(row.attempts),
            f"{row.attempts / total:.0%}",
            str(row.failures),
            f"{row.p50_ms:.1f}",
            f"{row.p99_ms:.1f}",
        ]
        for row in result.rows
    ]
    return header, rows


def summary_line(result: SchedulerResult) -> str:
    retries = result.attempts - result.requests
    return (
        f"{result.requests} requests in {result.seconds:.1f}s ({result.rate:.0f}/s) made "
        f"{result.attempts} attempts ({retries} retries on another backend); "
        f"{result.errors} requests failed for the caller; "
        f"end-to-end p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"
    )


def comparison_table(results: Sequence[SchedulerResult]) -> tuple[list[str], list[list[str]]]:
    header = [
        "scheduler", "req/s", "p50 ms", "p99 ms", "failed requests", "retries", "to slow",
        "to flaky",
    ]  # fmt: skip
    rows = [
        [
            r.scheduler,
            f"{r.rate:.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            str(r.errors),
            str(r.attempts - r.requests),
            f"{r.share('slow'):.1%}",
            f"{r.share('flaky'):.1%}",
        ]
        for r in results
    ]
    return header, rows


_TEXT_COLUMNS = {"backend", "behaviour", "scheduler"}


class Report:
    """Plain-text output: progress lines at each quarter, tables in fixed-width columns."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def note(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self, scheduler: str, total: int, job: Callable[[Callable[[int], None]], Any]) -> Any:
        done = 0
        marks = {total * q // 4 for q in (1, 2, 3)}

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if done in marks:
                self.note(f"  {scheduler}: {done}/{total} requests")

        self.note(f"{scheduler}: sending {total} requests ...")
        return job(advance)

    def table(self, title: str, header: list[str], rows: list[list[str]], footer: str = "") -> None:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [
                c.rjust(w) if c[:1].isdigit() else c.ljust(w)
                for c, w in zip(cells[1:], widths[1:], strict=True)
            ]
            return "  ".join([first, *rest]).rstrip()

        self.note(f"\n{title}")
        self.note(line(header))
        self.note("  ".join("-" * w for w in widths))
        for row in rows:
            self.note(line(row))
        if footer:
            self.note(footer)


class RichReport(Report):
    """The same output drawn with rich: a live progress bar and boxed tables."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        from rich.console import Console

        self.console = Console(file=out)
        if not self.console.is_terminal:  # piped or captured: do not squeeze the tables to 80
            self.console.width = max(self.console.width, 110)

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def run(self, scheduler: str, total: int, job: Callable[[Callable[[int], None]], Any]) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress(
            f"[bold]{scheduler:<22}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            task = progress.add_task(scheduler, total=total)
            return job(lambda n: progress.advance(task, n))

    def table(self, title: str, header: list[str], rows: list[list[str]], footer: str = "") -> None:
        from rich.table import Table

        table = Table(
            title=title, title_justify="left", caption=footer or None, caption_justify="left"
        )
        for name in header:
            table.add_column(name, justify="left" if name in _TEXT_COLUMNS else "right")
        for row in rows:
            table.add_row(*row)
        self.console.print(table)


def make_report(out: TextIO, plain: bool) -> Report:
    if not plain:
        try:
            return RichReport(out)
        except ImportError:
            pass
    return Report(out)


def choose_schedulers(requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(to run, skipped): the defaults that exist now, or exactly what was asked for."""
    available = set(available_schedulers())
    wanted = list(requested) if requested else list(DEFAULT_SCHEDULERS)
    return [s for s in wanted if s in available], [s for s in wanted if s not in available]


def run_demo(
    *,
    requests: int = 1000,
    concurrency: int = 16,
    schedulers: Sequence[str] | None = None,
    plain: bool = False,
    out: TextIO | None = None,
) -> list[SchedulerResult]:
    """Run the whole demo and print it; returns the results (for tests and notebooks)."""
    report = make_report(out or sys.stdout, plain)
    chosen, skipped = choose_schedulers(schedulers)
    if skipped:
        report.note(f"(not available in this install, skipped: {', '.join(skipped)})")
    report.note(
        f"Starting {len(BACKENDS)} HTTP backends on loopback in a child process: "
        + ", ".join(f"{b.spec.name} ({b.role}, weight {b.weight:g})" for b in BACKENDS)
    )
    results = []
    with BackendProcess([b.spec for b in BACKENDS]) as servers:
        for scheduler in chosen:
            result = report.run(
                scheduler,
                requests,
                lambda advance, s=scheduler: asyncio.run(  # type: ignore[misc]
                    run_scheduler(
                        s,
                        servers.addresses,
                        requests=requests,
                        concurrency=concurrency,
                        advance=advance,
                    )
                ),
            )
            results.append(result)
            header, rows = backend_table(result)
            report.table(f"{scheduler}", header, rows, summary_line(result))
    if len(results) > 1:
        header, rows = comparison_table(results)
        report.table(
            "All schedulers (failed requests: failed for the caller after retries; retries: "
            "attempts sent to another backend; to slow, to flaky: share of attempts)",
            header,
            rows,
        )
    return results
