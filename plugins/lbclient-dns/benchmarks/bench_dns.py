"""DNS plugin numbers, as ratios against a baseline measured in the same run.

``DnsSrvRegistry.resolve`` (one SRV query, then A and AAAA per target, RFC 2782 selection,
instances built) against the same seven queries sent with bare dnspython, both against
the same local dnsmasq: the cost of the plan machinery over the queries themselves.
The sync and asyncio paths are measured separately. Bounded: ``--rounds`` resolutions
each (best of 5 interleaved batches). Usage::

    python plugins/lbclient-dns/benchmarks/bench_dns.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import dns.asyncresolver
import dns.nameserver
import dns.resolver
from lbclient_dns import DnsSrvRegistry
from lbclient_dns.testing import DnsmasqServer

NAME = "_http._tcp.orders.example"
TARGETS = ["a.example", "b.example", "c.example"]


def best_rates(runs: list[Callable[[], object]], rounds: int) -> list[float]:
    """Best rate of each callable over 5 interleaved batches (noise from other processes
    hits both alike)."""
    best = [0.0] * len(runs)
    for _ in range(5):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            for _ in range(rounds):
                run()
            best[i] = max(best[i], rounds / (time.perf_counter() - start))
    return best


async def abest_rates(runs: list[Callable[[], Awaitable[object]]], rounds: int) -> list[float]:
    best = [0.0] * len(runs)
    for _ in range(5):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            for _ in range(rounds):
                await run()
            best[i] = max(best[i], rounds / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    srv = {NAME: [(t, 8000 + n, 10, 1) for n, t in enumerate(TARGETS)]}
    hosts = {t: [f"127.0.0.{n + 1}"] for n, t in enumerate(TARGETS)}
    with DnsmasqServer(srv=srv, hosts=hosts) as server:
        registry = DnsSrvRegistry(NAME, nameservers=[server.address])
        raw = dns.resolver.Resolver(configure=False)
        raw.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", server.port)]
        araw = dns.asyncresolver.Resolver(configure=False)
        araw.nameservers = raw.nameservers

        def bare() -> None:
            raw.resolve(NAME, "SRV")
            for target in TARGETS:
                raw.resolve(target, "A")
                with contextlib.suppress(dns.resolver.NoAnswer):
                    raw.resolve(target, "AAAA")

        async def abare() -> None:
            await araw.resolve(NAME, "SRV")
            for target in TARGETS:
                await araw.resolve(target, "A")
                with contextlib.suppress(dns.resolver.NoAnswer):
                    await araw.resolve(target, "AAAA")

        assert len(registry.resolve("orders")) == 3
        base, ours = best_rates([bare, lambda: registry.resolve("orders")], args.rounds)
        print(
            f"sync resolve: bare dnspython {base:.0f}/s, DnsSrvRegistry {ours:.0f}/s "
            f"(7 queries each, best of 5 interleaved x {args.rounds}); ratio {ours / base:.2f}"
        )

        async def ours_async() -> object:
            return await registry.aresolve("orders")

        abase, aours = asyncio.run(abest_rates([abare, ours_async], args.rounds))
        print(
            f"async resolve: bare dnspython {abase:.0f}/s, DnsSrvRegistry {aours:.0f}/s; "
            f"ratio {aours / abase:.2f}"
        )


if __name__ == "__main__":
    main()
