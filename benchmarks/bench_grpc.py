"""gRPC benchmark: lbclient's load-balanced channel against grpcio's own round_robin.

Both clients talk to the same three loopback servers, run in a separate process so that they
do not share the client's interpreter lock. grpcio's baseline is one channel to an ``ipv4:``
target listing all three with ``grpc.lb_policy_name=round_robin``; lbclient's is
``lbclient.grpc.insecure_channel`` over a static registry of the same three addresses (also
round_robin). Methods are raw-bytes generic handlers, so no code generation is needed.

Scenarios: unary calls/s at concurrency 1 and 16, sync (threads) and aio (tasks), and
server-streaming messages/s (sync and aio, 200 messages of 64 bytes per call). Each scenario
runs in paired rounds (both sides back to back, alternating which goes first); the ratio
reported is the median of the per-round ratios lbclient / grpcio.

    python benchmarks/bench_grpc.py                  # ~40 s: 6 scenarios x 11 rounds x 2 x 0.25 s
    python benchmarks/bench_grpc.py --seconds 0.3 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

import lbclient
import lbclient.grpc
import lbclient.grpc.aio

UNARY = "/bench.Bench/Unary"
STREAM = "/bench.Bench/Stream"
STREAM_MESSAGES = 200
PAYLOAD = b"x" * 64


# -- the server process ----------------------------------------------------------------------


def serve(count: int) -> None:
    """Run ``count`` aio servers on loopback; print their ports; stop when stdin closes."""

    async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return request

    async def stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        for _ in range(STREAM_MESSAGES):
            yield PAYLOAD

    handler = grpc.method_handlers_generic_handler(
        "bench.Bench",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )

    async def main() -> None:
        servers, ports = [], []
        for _ in range(count):
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((handler,))
            ports.append(server.add_insecure_port("127.0.0.1:0"))
            await server.start()
            servers.append(server)
        print(" ".join(map(str, ports)), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await asyncio.gather(*(server.stop(None) for server in servers))

    asyncio.run(main())


# -- measurement -----------------------------------------------------------------------------


Sample = tuple[float, float]
"""(operations per second, client CPU microseconds per operation)."""


def run_threads(call: Callable[[], int], concurrency: int, seconds: float) -> Sample:
    """Throughput and CPU cost of ``call`` (returns its op count) from ``concurrency`` threads."""
    done = [0] * concurrency
    stop = time.perf_counter() + seconds
    cpu = time.process_time()

    def worker(slot: int) -> None:
        count = 0
        while time.perf_counter() < stop:
            count += call()
        done[slot] = count

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _sample(sum(done), start, cpu)


def _sample(ops: int, start: float, cpu: float) -> Sample:
    return ops / (time.perf_counter() - start), (time.process_time() - cpu) / max(ops, 1) * 1e6


async def run_tasks(call: Callable[[], Awaitable[int]], concurrency: int, seconds: float) -> Sample:
    done = [0] * concurrency
    stop = time.perf_counter() + seconds
    cpu = time.process_time()

    async def worker(slot: int) -> None:
        count = 0
        while time.perf_counter() < stop:
            count += await call()
        done[slot] = count

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return _sample(sum(done), start, cpu)


BASE, OURS = "grpcio round_robin", "lbclient"


class Comparison:
    """Paired rounds, alternating which side goes first: under a noisy shared machine the
    median of the per-round ratios is far steadier than a ratio of two separate averages."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.rates: dict[str, list[float]] = {BASE: [], OURS: []}
        self.cpu: dict[str, list[float]] = {BASE: [], OURS: []}

    def add(self, base: Sample, ours: Sample) -> None:
        for side, (rate, cpu) in ((BASE, base), (OURS, ours)):
            self.rates[side].append(rate)
            self.cpu[side].append(cpu)

    @property
    def ratio(self) -> float:
        """Throughput, lbclient / grpcio: the median of the per-round ratios."""
        return statistics.median(o / b for b, o in zip(*self.rates.values(), strict=True))

    @property
    def cpu_ratio(self) -> float:
        """Client CPU per operation, grpcio / lbclient (1.0: same cost; below: we cost more)."""
        return statistics.median(b / o for b, o in zip(*self.cpu.values(), strict=True))

    def median(self, side: str) -> float:
        return statistics.median(self.rates[side])


def compare_sync(
    label: str, rounds: int, base: Callable[[], Sample], ours: Callable[[], Sample]
) -> Comparison:
    result = Comparison(label)
    for i in range(rounds):
        if i % 2:
            o, b = ours(), base()
        else:
            b, o = base(), ours()
        result.add(b, o)
    return result


async def compare_aio(
    label: str,
    rounds: int,
    base: Callable[[], Awaitable[Sample]],
    ours: Callable[[], Awaitable[Sample]],
) -> Comparison:
    result = Comparison(label)
    for i in range(rounds):
        if i % 2:
            o, b = await ours(), await base()
        else:
            b, o = await base(), await ours()
        result.add(b, o)
    return result


def sync_scenarios(
    channels: dict[str, grpc.Channel], seconds: float, rounds: int
) -> list[Comparison]:
    unary = {n: c.unary_unary(UNARY, _registered_method=True) for n, c in channels.items()}
    stream = {n: c.unary_stream(STREAM, _registered_method=True) for n, c in channels.items()}

    def unary_op(name: str) -> Callable[[], int]:
        method = unary[name]
        return lambda: (method(PAYLOAD), 1)[1]

    def stream_op(name: str) -> Callable[[], int]:
        method = stream[name]
        return lambda: sum(1 for _ in method(PAYLOAD))

    for name in channels:  # connect to all three servers first
        for _ in range(30):
            unary_op(name)()
    results = []
    for concurrency in (1, 16):
        results.append(
            compare_sync(
                f"sync unary, concurrency {concurrency} (calls/s)",
                rounds,
                lambda c=concurrency: run_threads(unary_op(BASE), c, seconds),
                lambda c=concurrency: run_threads(unary_op(OURS), c, seconds),
            )
        )
    results.append(
        compare_sync(
            "sync server-streaming (messages/s)",
            rounds,
            lambda: run_threads(stream_op(BASE), 1, seconds),
            lambda: run_threads(stream_op(OURS), 1, seconds),
        )
    )
    return results


async def aio_scenarios(
    ports: list[int], lb: lbclient.LoadBalancer, seconds: float, rounds: int
) -> list[Comparison]:
    channels: dict[str, Any] = {
        BASE: grpc.aio.insecure_channel(
            _ipv4_target(ports), options=[("grpc.lb_policy_name", "round_robin")]
        ),
        OURS: lbclient.grpc.aio.insecure_channel("bench", lb),
    }
    unary = {n: c.unary_unary(UNARY, _registered_method=True) for n, c in channels.items()}
    stream = {n: c.unary_stream(STREAM, _registered_method=True) for n, c in channels.items()}

    def unary_op(name: str) -> Callable[[], Awaitable[int]]:
        method = unary[name]

        async def op() -> int:
            await method(PAYLOAD)
            return 1

        return op

    def stream_op(name: str) -> Callable[[], Awaitable[int]]:
        method = stream[name]

        async def op() -> int:
            return sum([1 async for _ in method(PAYLOAD)])

        return op

    for name in channels:
        for _ in range(30):
            await unary_op(name)()
    results = []
    for label, make, concurrency in (
        ("aio unary, concurrency 1 (calls/s)", unary_op, 1),
        ("aio unary, concurrency 16 (calls/s)", unary_op, 16),
        ("aio server-streaming (messages/s)", stream_op, 1),
    ):
        results.append(
            await compare_aio(
                label,
                rounds,
                lambda m=make, c=concurrency: run_tasks(m(BASE), c, seconds),
                lambda m=make, c=concurrency: run_tasks(m(OURS), c, seconds),
            )
        )
    for channel in channels.values():
        await channel.close()
    return results


def _ipv4_target(ports: list[int]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="per measurement")
    parser.add_argument("--rounds", type=int, default=11, help="paired rounds per scenario")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ports = [int(p) for p in server.stdout.readline().split()]
        lb = lbclient.LoadBalancer({"bench": [f"127.0.0.1:{port}" for port in ports]})
        channels = {
            BASE: grpc.insecure_channel(
                _ipv4_target(ports), options=[("grpc.lb_policy_name", "round_robin")]
            ),
            OURS: lbclient.grpc.insecure_channel("bench", lb),
        }
        results = sync_scenarios(channels, args.seconds, args.rounds)
        for channel in channels.values():
            channel.close()
        results += asyncio.run(aio_scenarios(ports, lb, args.seconds, args.rounds))
        lb.close()
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)
    print(
        f"{'scenario (medians of ' + str(args.rounds) + ' paired rounds)':44} "
        f"{'grpcio rr':>10} {'lbclient':>10} {'ratio':>6} {'cpu ratio':>9}"
    )
    for result in results:
        print(
            f"{result.label:44} {result.median(BASE):10.0f} {result.median(OURS):10.0f} "
            f"{result.ratio:6.2f} {result.cpu_ratio:9.2f}"
        )
    print("ratio: throughput lbclient/grpcio; cpu ratio: client CPU per op grpcio/lbclient")


if __name__ == "__main__":
    main()
