"""Scheduler costs that grow with the list: LVS indexes, rendezvous' key cache, table rebuilds.

    python benchmarks/bench_scale.py            # 10 to 10,000 instances (~1-2 min)
    python benchmarks/bench_scale.py --write    # also rewrite "## Scale" in benchmarks/README.md

Three tables, each figure the best of a few samples of thread CPU time (a shared machine):

1. ``lc``/``wlc``/``sed``/``nq``/``lblc``/``lblcr`` pick cost as a ratio to ``next()`` on an
   ``itertools.cycle`` over the same endpoints (timed next to it), and what the index costs
   the request path: one ``Endpoint.begin()`` + ``finish()`` with the scheduler's index
   watching the endpoint, against the same pair on an endpoint nobody watches.
2. ``rendezvous``: a repeated key (a cache hit) and a new key (a miss), as ratios to the cycle.
3. ``maglev`` (65,537 slots) and ``ring_hash`` (defaults) build times at 10,000 instances:
   the first build, and the rebuild after 1% of the instances are replaced (handed the
   previous scheduler, as the balancer does), for equal weights, weights 1-4, and 1% of the
   instances at weight 100.
4. Picks while the list churns: a ``LoadBalancer`` over 10,000 instances, one thread picking
   and completing in a loop (wall time per pick + done), first steady, then while another
   thread publishes a list with 1% of the instances replaced every second (as a registry
   watch does); p50/p99/p99.9 of both, and how long each publication took to be serving.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import threading

import _readme
from bench_pick import cycler, make_endpoints, picker, time_per_call

import lbclient
from lbclient import Endpoint, Outcome, PickContext, ServiceInstance
from lbclient.schedulers import Scheduler, scheduler_class

HEADING = "## Scale"
SIZES = (10, 100, 1000, 10000)
LVS = ("lc", "wlc", "sed", "nq", "lblc", "lblcr")
SERVICE = "svc"
"""The churning service: its instances name it, as a registry's do (a publication whose every
instance names another service would rewrite all of them, not replace 1%)."""


def round_trip(endpoint: Endpoint) -> Callable[[int], None]:
    outcome = Outcome(latency=0.01)

    def run(calls: int) -> None:
        for _ in range(calls):
            endpoint.begin()
            endpoint.finish(outcome)

    return run


def lvs_rows(budget: float, repeats: int) -> list[str]:
    rng = random.Random(2026)
    contexts = [PickContext(key=f"user-{i}") for i in range(512)]
    rows = []
    for name in LVS:
        cells = []
        for size in SIZES:
            items = make_endpoints(size, rng)
            scheduler = scheduler_class(name)(items, rng=random.Random(1))
            base = time_per_call(cycler(items, contexts), budget, repeats)
            cost = time_per_call(picker(scheduler.pick, contexts), budget, repeats)
            lone = make_endpoints(1, rng)[0]
            bare = time_per_call(round_trip(lone), budget, repeats)
            watched = time_per_call(round_trip(items[size // 2]), budget, repeats)
            cells.append(f"{cost / base:,.1f} / {(watched - bare) * 1e6:+.2f} us")
            print(f"{name:6} {size:>6}: {cells[-1]}  (cycle {base * 1e9:.0f} ns)", flush=True)
            del scheduler
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return rows


def rendezvous_rows(budget: float, repeats: int) -> list[str]:
    rng = random.Random(7)
    rows = []
    cells_hit, cells_miss = [], []
    for size in SIZES:
        items = make_endpoints(size, rng)
        hot = [PickContext(key=f"user-{i}") for i in range(512)]
        scheduler = scheduler_class("rendezvous")(items, rng=random.Random(1))
        for context in hot:
            scheduler.pick(context)
        base = time_per_call(cycler(items, hot), budget, repeats)
        hit = time_per_call(picker(scheduler.pick, hot), budget, repeats)
        misses = new_keys(scheduler)

        miss = time_per_call(misses, budget, repeats)
        cells_hit.append(f"{hit / base:,.1f} ({hit * 1e6:,.2f} us)")
        cells_miss.append(f"{miss / base:,.0f} ({miss * 1e6:,.1f} us)")
        print(f"rendezvous {size:>6}: hit {cells_hit[-1]}  miss {cells_miss[-1]}", flush=True)
    rows.append("| repeated key (cache hit) | " + " | ".join(cells_hit) + " |")
    rows.append("| new key (miss) | " + " | ".join(cells_miss) + " |")
    return rows


def new_keys(scheduler: Scheduler) -> Callable[[int], None]:
    """Picks with keys never seen before (cache misses)."""
    fresh = (PickContext(key=f"new-{i}") for i in range(10**9))

    def run(calls: int) -> None:
        for _ in range(calls):
            scheduler.pick(next(fresh))

    return run


def fleet(kind: str, size: int, first: int = 0) -> list[Endpoint]:
    def weight(n: int) -> float:
        if kind == "weights 1-4":
            return float(1 + n % 4)
        if kind == "1% at weight 100":
            return 100.0 if n % 100 == 0 else 1.0
        return 1.0

    return [
        Endpoint(
            ServiceInstance(
                SERVICE, f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 8000, weight=weight(n)
            )
        )
        for n in range(first, first + size)
    ]


def build_time(
    cls: type[Scheduler], items: list[Endpoint], previous: Scheduler | None, repeats: int
) -> tuple[float, Scheduler]:
    best, built = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        start = time.thread_time()
        built = cls(items, previous=previous)
        best = min(best, time.thread_time() - start)
    assert built is not None
    return best, built


def rebuild_rows(repeats: int) -> list[str]:
    size = 10000
    rows = []
    for name in ("maglev", "ring_hash"):
        cls = scheduler_class(name)
        for kind in ("equal weights", "weights 1-4", "1% at weight 100"):
            items = fleet(kind, size)
            churned = [*items[size // 100 :], *fleet(kind, size // 100, first=size)]
            first, previous = build_time(cls, items, None, repeats)
            again, _ = build_time(cls, churned, previous, repeats)
            rows.append(f"| `{name}` | {kind} | {first * 1e3:.1f} | {again * 1e3:.1f} |")
            print(rows[-1], flush=True)
    return rows


def percentile(samples: list[int], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))] / 1e3


def pick_latencies(state: lbclient.ServiceState, seconds: float) -> list[int]:
    """Wall nanoseconds of each pick + done, for ``seconds``."""
    contexts = [PickContext(key=f"user-{i}") for i in range(512)]
    samples: list[int] = []
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    i = 0
    while True:
        start = clock()
        state.pick(contexts[i & 511]).done()
        stop = clock()
        samples.append(stop - start)
        i += 1
        if stop > end:
            return samples


def publish_churn(
    state: lbclient.ServiceState,
    instances: list[ServiceInstance],
    stop: threading.Event,
    publish_ms: list[float],
) -> None:
    """Every second, publish the list with 1% of its instances replaced by new ones."""
    size = len(instances)
    fresh = size
    while not stop.wait(1.0):
        newcomers = [e.instance for e in fleet("weights 1-4", size // 100, fresh)]
        fresh += size // 100
        instances = instances[size // 100 :] + newcomers
        start = time.perf_counter()
        state.publish(instances)
        publish_ms.append((time.perf_counter() - start) * 1e3)


def churn_rows(seconds: float) -> list[str]:
    size = 10000
    rows = []
    for name in ("maglev", "ring_hash", "wlc"):
        instances = [e.instance for e in fleet("weights 1-4", size)]
        lb = lbclient.LoadBalancer({SERVICE: instances}, scheduler=name, outlier=None)
        try:
            state = lb.service(SERVICE)
            state.pick().done()
            alone = [
                *instances[size // 100 :],
                *(e.instance for e in fleet("weights 1-4", 100, 10 * size)),
            ]
            gc.collect()
            start = time.thread_time()
            state.publish(alone)  # uncontended: nobody else wants the GIL
            alone_ms = (time.thread_time() - start) * 1e3
            state.publish(instances)
            steady = pick_latencies(state, seconds)
            publish_ms: list[float] = []
            stop = threading.Event()

            publisher = threading.Thread(
                target=publish_churn, args=(state, instances, stop, publish_ms)
            )
            publisher.start()
            churning = pick_latencies(state, seconds)
            stop.set()
            publisher.join()
        finally:
            lb.close()
        cells = [
            f"{percentile(steady, q):.1f} / {percentile(churning, q):.1f}"
            for q in (0.5, 0.99, 0.999)
        ]
        rows.append(
            f"| `{name}` | " + " | ".join(cells) + f" | {alone_ms:.0f} ms | {len(publish_ms)}: "
            f"{min(publish_ms):.0f}-{max(publish_ms):.0f} ms |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"update {HEADING!r} in README.md")
    args = parser.parse_args(argv)
    budget, repeats = 0.02, 3
    gc.disable()  # collections during a sample would be charged to whichever scheduler ran
    try:
        lvs = lvs_rows(budget, repeats)
        hrw = rendezvous_rows(budget, repeats)
    finally:
        gc.enable()
    rebuild = rebuild_rows(repeats)
    churn = churn_rows(5.0)
    head = " | ".join(f"{s:,} inst." for s in SIZES)
    body = "\n".join(
        [
            "LVS schedulers: pick cost as a ratio to `next()` on an `itertools.cycle` over the",
            "same endpoints (timed next to it in the same run), then the CPU a request's",
            "`Endpoint.begin()` + `finish()` pays for the scheduler's load index (against an",
            "endpoint nobody watches). Lists under 64 instances are scanned (no index, +0);",
            "from 64 on, picks come from the index. Endpoints: weights 1-4, 0-3 requests in",
            "flight; for `lblc`/`lblcr` half the keys' servers are past the overload floor, so",
            "those picks consult the least loaded instance.",
            "",
            f"| scheduler | {head} |",
            "|---|" + "---:|" * len(SIZES),
            *lvs,
            "",
            "`rendezvous`: ratio to the cycle (and CPU per pick). A hit is a key among the",
            "scheduler's 4,096 most recent; a miss scores every instance.",
            "",
            f"| rendezvous | {head} |",
            "|---|" + "---:|" * len(SIZES),
            *hrw,
            "",
            "Build time at 10,000 instances (CPU ms, best of 3): first build, and the rebuild",
            "after 1% of the instances are replaced (given the previous scheduler). Same tables",
            "and rings as before the tuning, slot for slot (tests/schedulers/test_rebuild.py).",
            "A `ring_hash` rebuild slots the newcomers' points into the previous ring; a",
            "`maglev` rebuild reuses every instance's hashed probe but refills all 65,537 slots",
            "in the algorithm's order (its probing loop is most of the time).",
            "",
            "| scheduler | weights | first build | after 1% churn |",
            "|---|---|---:|---:|",
            *rebuild,
            "",
            "Picks while the list churns: 10,000 instances (weights 1-4), one thread picking",
            "and completing for 5 s steady, then 5 s while another publishes a list with 1% of",
            "the instances replaced every second. Wall microseconds per pick + done, steady /",
            "churning. A publication (filters, then the scheduler build, on the publisher's",
            "thread) is serving once `publish()` returns: its CPU time alone, then the wall",
            "time of each one made while the picking thread competes for the GIL (the two take",
            "turns of the 5 ms switch interval, so at least twice the CPU time). A pick caught",
            "by a build waits up to a switch interval; p99.9 also shows the shared machine.",
            "",
            "| scheduler | p50 | p99 | p99.9 | publish CPU | publications: wall time |",
            "|---|---:|---:|---:|---:|---:|",
            *churn,
        ]
    )
    print()
    print(body)
    if args.write:
        section = (
            f"{HEADING}\n\nCommand: `python benchmarks/bench_scale.py` (Python "
            f"{sys.version.split()[0]}, {time.strftime('%Y-%m-%d', time.gmtime())}).\n\n{body}\n"
        )
        _readme.write_section(HEADING, section)
        print(f"\nwrote {HEADING!r} to {_readme.README}")


if __name__ == "__main__":
    main()
