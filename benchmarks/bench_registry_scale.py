"""Many services: threads, memory, first picks and change propagation on Consul and Kubernetes.

    python benchmarks/bench_registry_scale.py [--services 1000] [--instances 5] [--seconds 20]
                                              [--memory-instances 100] [--write]

For each registry (ConsulRegistry on a ConsulTestServer, KubernetesRegistry on a
KubernetesTestServer; each server in a child process, so it does not share this
interpreter's lock), a sync LoadBalancer picks once from every one of ``services`` services
of ``instances`` instances each, then 1% of the services change per second for ``seconds``
seconds (one instance's address moves; a single watch event or blocking-query answer).
Reported:

- lbclient threads (named ``lbclient-*``) once every service is watched, and the process's
  threads and RSS (VmRSS, whole process: interpreter and libraries included);
- the time until every service had its first pick (one after the other, as a gateway
  warming up would), and per service;
- change propagation: from asking the server for the change until the balancer's usable
  list has it (``on_instances``), p50/p99/max over every change, and how many never arrived;
- memory per instance at ``services`` x ``memory_instances`` instances (100,000 by default),
  measured with tracemalloc around building the balancer and watching every service: the
  whole client side (instances, endpoints, schedulers, filters, registry caches, watch
  tasks and their connections) divided by the number of instances.

Bounded: about a minute and a half with the defaults; loopback only. ``--write`` stores the
results as the "Registry scale" section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import multiprocessing
import random
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import lbclient

NS = "shop"
Build = Callable[[Any], lbclient.Registry]


def name(service: int) -> str:
    return f"svc-{service:04d}"


def host(service: int, instance: int, moved: bool = False) -> str:
    return f"10.{service // 250}.{service % 250}.{instance + (100 if moved else 1)}"


# -- the servers (child processes) ----------------------------------------------------------


def consul_child(conn: Connection, services: int, instances: int) -> None:
    from lbclient.testing._consul_decode import decode_registration
    from lbclient.testing.consul import ConsulTestServer

    with ConsulTestServer() as server:

        def put(service: int, instance: int, moved: bool = False) -> None:
            body = {
                "Name": name(service),
                "ID": f"{name(service)}-{instance}{'-moved' if moved else ''}",
                "Address": host(service, instance, moved),
                "Port": 8080,
            }
            spec, checks = decode_registration(json.dumps(body).encode())
            server.state.register(spec, checks, False)

        for service in range(services):
            for instance in range(instances):
                put(service, instance)
        conn.send(server.port)
        while (command := conn.recv()) is not None:
            # A new instance id (the balancer keeps an instance's history by id): the moved
            # instance arrives, then the old one leaves.
            service, moved = command
            put(service, instances - 1, moved)
            old = f"{name(service)}-{instances - 1}{'' if moved else '-moved'}"
            server.state.deregister(old)
            conn.send(True)


def k8s_child(conn: Connection, services: int, instances: int) -> None:
    from lbclient.testing.kubernetes import KubernetesTestServer

    def pods(service: int, moved: bool = False) -> list[str]:
        last = instances - 1
        return [f"{host(service, i, moved and i == last)}:8080" for i in range(instances)]

    with KubernetesTestServer(bookmark_interval=5.0) as api:
        for service in range(services):
            api.scale(NS, name(service), pods(service))
        conn.send(api.port)
        while (command := conn.recv()) is not None:
            service, moved = command
            api.scale(NS, name(service), pods(service, moved))
            conn.send(True)


def consul_registry(port: int) -> lbclient.Registry:
    from lbclient.consul import ConsulRegistry

    return ConsulRegistry(port=port)


def k8s_registry(port: int) -> lbclient.Registry:
    import kubernetes.client

    from lbclient.kubernetes import KubernetesRegistry

    configuration = kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}")
    return KubernetesRegistry(NS, configuration=configuration)


WARM_UP = {"Consul": ["consul.aio"], "Kubernetes": ["kubernetes.aio.client"]}
"""What the watches import on their first query, imported before memory is counted."""

SETUPS: dict[str, tuple[Callable[..., None], Build]] = {
    "Consul": (consul_child, consul_registry),
    "Kubernetes": (k8s_child, k8s_registry),
}


class Server:
    """A test server in a child process, changed on command."""

    def __init__(self, child: Callable[..., None], services: int, instances: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=child, args=(theirs, services, instances))
        self.process.start()
        self.port: int = self.conn.recv()

    def change(self, service: int, moved: bool) -> None:
        self.conn.send((service, moved))
        self.conn.recv()

    def stop(self) -> None:
        self.conn.send(None)
        self.process.join(30)


# -- measurements ---------------------------------------------------------------------------


def lbclient_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lbclient-")]


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Watcher(lbclient.LoadBalancerListener):
    """Notes when each requested change shows up in a service's usable list."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, tuple[str, float]] = {}
        self.delays: list[float] = []

    def expect(self, service: str, address: str) -> None:
        with self.lock:
            self.pending[service] = (address, time.perf_counter())

    def on_instances(self, service: str, usable: Sequence[lbclient.ServiceInstance]) -> None:
        with self.lock:
            wanted = self.pending.get(service)
            if wanted is not None and any(i.host == wanted[0] for i in usable):
                del self.pending[service]
                self.delays.append(time.perf_counter() - wanted[1])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def scale_run(label: str, services: int, instances: int, seconds: float) -> dict[str, Any]:
    child, build = SETUPS[label]
    server = Server(child, services, instances)
    try:
        threads_before = threading.active_count()
        watcher = Watcher()
        lb = lbclient.LoadBalancer(build(server.port), listeners=[watcher])
        started = time.perf_counter()
        for service in range(services):
            lb.pick(name(service)).done()
        first_picks = time.perf_counter() - started
        time.sleep(2.0)  # every watch settled in its blocking query / stream
        result: dict[str, Any] = {
            "lbclient_threads": len(lbclient_threads()),
            "threads": threading.active_count() - threads_before,
            "rss": rss_mib(),
            "first_picks": first_picks,
        }
        rng = random.Random(7)
        moved = [False] * services
        changes = max(1, round(services * 0.01 * seconds))
        gap = seconds / changes
        deadline = time.perf_counter()
        for _ in range(changes):
            deadline += gap
            service = rng.randrange(services)
            moved[service] = not moved[service]
            watcher.expect(name(service), host(service, instances - 1, moved[service]))
            server.change(service, moved[service])
            time.sleep(max(0.0, deadline - time.perf_counter()))
        end = time.perf_counter() + 5.0
        while watcher.pending and time.perf_counter() < end:
            time.sleep(0.01)
        result |= {
            "changes": changes,
            "lost": len(watcher.pending),
            "p50": percentile(watcher.delays, 0.5),
            "p99": percentile(watcher.delays, 0.99),
            "max": max(watcher.delays, default=float("nan")),
        }
        lb.close()
        result["threads_after_close"] = len(lbclient_threads())
        return result
    finally:
        server.stop()


def memory_run(label: str, services: int, instances: int) -> dict[str, float]:
    child, build = SETUPS[label]
    server = Server(child, services, instances)
    try:
        for module in WARM_UP[label]:  # imports are not instances
            importlib.import_module(module)
        with lbclient.LoadBalancer(build(server.port)) as warm_up:
            warm_up.pick(name(0)).done()
            time.sleep(1.0)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        lb = lbclient.LoadBalancer(build(server.port))
        for service in range(services):
            lb.pick(name(service)).done()
        time.sleep(3.0)  # every watch started and settled
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        lb.close()
        return {"per_instance": used / (services * instances), "total_mib": used / 2**20}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--memory-instances", type=int, default=100)
    parser.add_argument("--only", choices=sorted(SETUPS), default=None)
    parser.add_argument("--write", action="store_true", help="update benchmarks/README.md")
    args = parser.parse_args()
    labels = [args.only] if args.only else list(SETUPS)
    rows: dict[str, dict[str, Any]] = {}
    for label in labels:  # every scale run first: RSS before any 100,000-instance run
        rows[label] = scale_run(label, args.services, args.instances, args.seconds)
        print(label, rows[label], flush=True)
    for label in labels:
        rows[label] |= memory_run(label, args.services, args.memory_instances)
        print(label, rows[label], flush=True)
    section = render(args, rows)
    print(section)
    if args.write:
        from _readme import write_section

        write_section("## Registry scale", section)


def render(args: argparse.Namespace, rows: dict[str, dict[str, Any]]) -> str:
    total = args.services * args.memory_instances
    lines = [
        "## Registry scale",
        "",
        f"Command: `python benchmarks/bench_registry_scale.py --services {args.services} "
        f"--instances {args.instances} --seconds {args.seconds:g} --memory-instances "
        f"{args.memory_instances}` (Python 3.11, loopback, shared 2-core machine, "
        f"{time.strftime('%Y-%m-%d')}).",
        "",
        f"A sync LoadBalancer over {args.services:,} services x {args.instances} instances, "
        "every service picked once (so watched), then 1% of the services changing per "
        f"second for {args.seconds:g} s. Every sync watch is a task of one shared event-loop "
        "thread (`lbclient-watch-loop`); Kubernetes watches the first 9 services one by one "
        "and the rest through one namespace-wide watch (`namespace_watch_from=10`). Threads "
        "and RSS are the whole process (RSS includes the interpreter and every library); "
        f"memory per instance is tracemalloc's count at {total:,} instances "
        f"({args.services:,} x {args.memory_instances}) of everything the balancer and its "
        "registry allocate (instances, endpoints, schedulers, filters, registry caches, "
        "watch tasks), divided by the instances. Targets: at most 4 lbclient threads, "
        "propagation p99 under 1 s, at most 1 KiB per instance.",
        "",
        "| | lbclient threads | threads (all) | RSS | first pick of every service | "
        "propagation p50 / p99 / max | changes (lost) | memory per instance |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['lbclient_threads']} | {r['threads']} | {r['rss']:.0f} MiB | "
            f"{r['first_picks']:.1f} s ({r['first_picks'] / args.services * 1000:.1f} ms "
            f"each) | {r['p50'] * 1000:.0f} / {r['p99'] * 1000:.0f} / {r['max'] * 1000:.0f} "
            f"ms | {r['changes']} ({r['lost']}) | {r['per_instance']:.0f} B |"
        )
    lines += [
        "",
        "Reading it: the lbclient threads are the shared watch loop and outlier detection's "
        "timer, whatever the number of services (one thread per watched service before). "
        "Other threads are the libraries' (asyncio's resolver pool for aiohttp's "
        "`getaddrinfo`). Every Consul watch still holds one connection for its blocking "
        "query, all in one aiohttp session: a real agent allows 200 connections per client "
        "address by default (`limits.http_max_conns_per_client`), so raise it past 200 "
        "watched services. Kubernetes uses 10 connections (9 per-service watches and the "
        "namespace watch) for 1,000 services. Consul's propagation includes the test "
        "server's own wake-up of its 1,000 held queries per change. Memory per instance "
        "counts everything (100 instances per service, so per-service costs such as the "
        "service's state, scheduler and watch add about a hundredth of theirs); the biggest "
        "parts are the instance with its metadata, the endpoint, the outlier record and the "
        "strings the registry sent (address, id). The Kubernetes cache holds each "
        "EndpointSlice as compressed JSON and unpacks only the slices of a service that "
        "changed.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
