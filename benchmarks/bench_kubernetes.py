"""Kubernetes discovery: how fast a scale change reaches the balancer, vs the client's own watch.

    python benchmarks/bench_kubernetes.py [--rounds 5] [--changes 30]

The KubernetesTestServer runs in a child process (so it does not share this interpreter's
lock). Each change flips the service ``orders`` between 2 and 3 pods; the delay is measured from
the moment the change is requested until the consumer sees it:

- baseline: a bare ``kubernetes.watch.Watch().stream(list_namespaced_endpoint_slice, ...)`` loop,
  the least any watching client does (it sees the raw event, merges nothing);
- lbclient sync: ``KubernetesRegistry`` in a LoadBalancer, watch thread, until the balancer's
  usable list has changed (``on_instances``);
- lbclient async: the same from an asyncio loop (``kubernetes.aio`` watch task).

Phases alternate within each round (baseline, sync, async, then the next round in another
order), and the median delay of each consumer is reported with its ratio to the baseline's
median from the same run. Bounded: rounds x 3 x changes changes; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

import kubernetes.client
import kubernetes.watch

import lbclient
from lbclient.kubernetes import KubernetesRegistry

NS = "shop"
PODS = [["10.0.0.1:8080", "10.0.0.2:8080"], ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8081"]]
"""2 pods (one slice, one port), or 3 (a second slice for the pod on port 8081): each change is
exactly one watch event (ADDED or DELETED of slice ``orders-8081``)."""


def serve(conn: Connection) -> None:
    """Child process: the API server, changed on command."""
    from lbclient.testing.kubernetes import KubernetesTestServer

    with KubernetesTestServer(bookmark_interval=5.0) as api:
        api.scale(NS, "orders", PODS[0])
        conn.send(api.url)
        while True:
            command = conn.recv()
            if command is None:
                return
            api.scale(NS, "orders", command)
            conn.send("ok")


class Change:
    """Ask the child for a change; consumers report when they saw it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.seen = threading.Event()
        self.at = 0.0
        self.wanted = 2

    def make(self, size: int, observe: Callable[[], None] | None = None) -> float:
        self.seen.clear()
        self.wanted = size
        started = time.perf_counter()
        self.conn.send(PODS[size - 2])
        self.conn.recv()
        if not self.seen.wait(10):
            raise RuntimeError("a change was not observed within 10 s")
        return self.at - started

    def saw(self, size: int) -> None:
        if size == self.wanted and not self.seen.is_set():
            self.at = time.perf_counter()
            self.seen.set()


def baseline(url: str, change: Change, changes: int) -> list[float]:
    api = kubernetes.client.DiscoveryV1Api(
        kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
    )
    listed = api.list_namespaced_endpoint_slice(
        NS, label_selector="kubernetes.io/service-name=orders"
    )
    watch = kubernetes.watch.Watch()
    slices: set[str] = {s.metadata.name for s in listed.items}
    ready = threading.Event()
    stopped = threading.Event()

    def run() -> None:
        stream = watch.stream(
            api.list_namespaced_endpoint_slice,
            NS,
            label_selector="kubernetes.io/service-name=orders",
            resource_version=listed.metadata.resource_version,
            allow_watch_bookmarks=True,
        )
        ready.set()
        try:
            for event in stream:
                if event["type"] == "ADDED":
                    slices.add(event["object"].metadata.name)
                elif event["type"] == "DELETED":
                    slices.discard(event["object"].metadata.name)
                change.saw(len(slices) + 1)  # 1 slice = 2 pods, 2 slices = 3 pods (see PODS)
        except Exception:
            if not stopped.is_set():
                raise  # Watch.stop() cuts the socket: the error after it is expected

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()
    delays = flip(change, changes)
    stopped.set()
    watch.stop()
    thread.join(5)
    return delays


def flip(change: Change, changes: int) -> list[float]:
    delays = []
    for i in range(changes):
        delays.append(change.make(3 if i % 2 == 0 else 2))
    return delays


class Seen(lbclient.LoadBalancerListener):
    def __init__(self, change: Change) -> None:
        self.change = change

    def on_instances(self, service: str, usable: Sequence[lbclient.ServiceInstance]) -> None:
        self.change.saw(len(usable))


def ours_sync(url: str, change: Change, changes: int) -> list[float]:
    registry = KubernetesRegistry(NS, configuration=kubernetes.client.Configuration(host=url))
    with lbclient.LoadBalancer(registry, listeners=[Seen(change)]) as lb:
        lb.service("orders")
        return flip(change, changes)


def ours_async(url: str, change: Change, changes: int) -> list[float]:
    async def main() -> list[float]:
        registry = KubernetesRegistry(NS, configuration=kubernetes.client.Configuration(host=url))
        async with lbclient.LoadBalancer(registry, listeners=[Seen(change)]) as lb:
            await lb.aservice("orders")
            return await asyncio.to_thread(flip, change, changes)

    return asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(child,), daemon=True)
    server.start()
    url = parent.recv()
    change = Change(parent)
    consumers: dict[str, Callable[[str, Change, int], list[float]]] = {
        "baseline (kubernetes Watch)": baseline,
        "lbclient sync": ours_sync,
        "lbclient async": ours_async,
    }
    results: dict[str, list[float]] = {name: [] for name in consumers}
    order = list(consumers)
    try:
        for _ in range(args.rounds):
            for name in order:
                results[name] += consumers[name](url, change, args.changes)
            order = order[1:] + order[:1]
    finally:
        parent.send(None)
        server.join(5)
    base = statistics.median(results["baseline (kubernetes Watch)"])
    print(f"{'consumer':30} {'median ms':>10} {'p90 ms':>8} {'ratio':>6}")
    for name, delays in results.items():
        delays.sort()
        median = statistics.median(delays)
        p90 = delays[int(len(delays) * 0.9) - 1]
        print(f"{name:30} {median * 1000:10.2f} {p90 * 1000:8.2f} {median / base:6.2f}")


if __name__ == "__main__":
    main()
