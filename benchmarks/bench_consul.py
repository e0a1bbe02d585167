"""Consul discovery: how fast a (de)registration reaches the balancer, vs py-consul's own loop.

    python benchmarks/bench_consul.py [--rounds 3] [--changes 10] [--gap 0.25]

The ConsulTestServer runs in a child process (so it does not share this interpreter's lock).
Each change registers or deregisters instance ``b`` of ``orders`` (``a`` stays); the delay is
measured from the moment the change is requested until the consumer sees it:

- baseline: a bare py-consul blocking-query loop (``health.service(index=..., wait=...)``),
  the least any watching client does;
- lbclient sync: ``ConsulRegistry`` in a LoadBalancer (watch thread), until the balancer's
  usable list has changed (``on_instances``);
- lbclient async: the same from an asyncio loop (``consul.aio`` watch task).

Phases alternate within each round; the median delay of each consumer is reported with its
ratio to the baseline's median from the same run. Changes are ``gap`` seconds apart (the watch
is rate-limited to 10 queries/s, burst 2, as Consul advises; with ``--gap 0`` the numbers show
that limit instead). Bounded: rounds x 3 x changes changes, about 25 s by default.
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

import consul

import lbclient
from lbclient.consul import ConsulRegistry


def serve(conn: Connection) -> None:
    """Child process: the agent, changed on command."""
    from lbclient.testing.consul import ConsulTestServer

    with ConsulTestServer() as server:
        agent = consul.Consul(port=server.port)
        agent.agent.service.register("orders", service_id="a", address="127.0.0.1", port=9001)
        conn.send(server.port)
        while (command := conn.recv()) is not None:
            if command == "add":
                agent.agent.service.register(
                    "orders", service_id="b", address="127.0.0.1", port=9002
                )
            else:
                agent.agent.service.deregister("b")
            conn.send("ok")


class Change:
    """Ask the child for a change; the consumer reports when it saw the expected count."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.expected = 1
        self.started = 0.0
        self.seen = threading.Event()

    gap = 0.25
    """Seconds between changes: lbclient's watch allows 10 queries/s (burst 2), so back-to-back
    changes would measure the rate limit instead of the propagation of one change."""

    def request(self) -> None:
        time.sleep(self.gap)
        self.expected = 2 if self.expected == 1 else 1
        self.seen.clear()
        self.started = time.perf_counter()
        self.conn.send("add" if self.expected == 2 else "remove")
        self.conn.recv()

    def observe(self, count: int) -> None:
        if count == self.expected and not self.seen.is_set():
            self.delay = time.perf_counter() - self.started
            self.seen.set()

    def run(self, changes: int, wait: Callable[[], None]) -> list[float]:
        delays = []
        for _ in range(changes):
            self.request()
            wait()
            delays.append(self.delay)
        return delays


def baseline(change: Change, port: int, changes: int) -> list[float]:
    stop = threading.Event()
    client = consul.Consul(port=port)

    def loop() -> None:
        index = None
        while not stop.is_set():
            index, entries = client.health.service("orders", index=index, wait="5s")
            change.observe(len(entries))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    delays = change.run(changes, lambda: change.seen.wait(30))
    stop.set()
    return delays


class Counter(lbclient.LoadBalancerListener):
    def __init__(self, change: Change) -> None:
        self.change = change

    def on_instances(self, service: str, instances: Sequence[lbclient.ServiceInstance]) -> None:
        self.change.observe(len(instances))


def lbclient_sync(change: Change, port: int, changes: int) -> list[float]:
    lb = lbclient.LoadBalancer(ConsulRegistry(port=port), listeners=[Counter(change)])
    lb.service("orders")
    delays = change.run(changes, lambda: change.seen.wait(30))
    lb.close()
    return delays


def lbclient_async(change: Change, port: int, changes: int) -> list[float]:
    async def main() -> list[float]:
        lb = lbclient.LoadBalancer(ConsulRegistry(port=port), listeners=[Counter(change)])
        await lb.aservice("orders")
        delays = []
        for _ in range(changes):
            await asyncio.to_thread(change.request)
            await asyncio.to_thread(change.seen.wait, 30)
            delays.append(change.delay)
        lb.close()
        return delays

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--gap", type=float, default=Change.gap, help="seconds between changes")
    args = parser.parse_args()
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=serve, args=(child,), daemon=True)
    process.start()
    port = parent.recv()
    change = Change(parent)
    change.gap = args.gap
    phases = {"baseline (py-consul loop)": baseline, "lbclient sync": lbclient_sync,
              "lbclient async": lbclient_async}  # fmt: skip
    results: dict[str, list[float]] = {name: [] for name in phases}
    order = list(phases)
    for round_ in range(args.rounds):
        for name in order[round_ % 3 :] + order[: round_ % 3]:
            results[name] += phases[name](change, port, args.changes)
    parent.send(None)
    process.join(10)
    base = statistics.median(results[order[0]])
    print(f"{'consumer':28} {'median ms':>10} {'p90 ms':>8} {'ratio':>6}")
    for name, delays in results.items():
        median = statistics.median(delays)
        p90 = statistics.quantiles(delays, n=10)[-1]
        print(f"{name:28} {median * 1000:10.2f} {p90 * 1000:8.2f} {median / base:6.2f}")


if __name__ == "__main__":
    main()
