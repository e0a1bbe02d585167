"""gRPC benchmark: lbclient's load-balanced channel against grpcio's own round_robin.

Both clients talk to the same three loopback servers, run in a separate process so that they
do not share the client's interpreter lock. grpcio's baseline is one channel to an ``ipv4:``
target listing all three with ``grpc.lb_policy_name=round_robin``; lbclient's is
``lbclient.grpc.insecure_channel`` over a static registry of the same three addresses (also
round_robin). Methods are raw-bytes generic handlers, so no code generation is needed.

Scenarios: unary calls/s at concurrency 1 and 16, sync (threads) and aio (tasks), and
server-streaming messages/s (sync and aio). Each pair is measured in alternating rounds and
the best round of each side is kept; the report is the ratio lbclient / grpcio.

    python benchmarks/bench_grpc.py                 # ~30 s on 2 cores
    python benchmarks/bench_grpc.py --seconds 0.5 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
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


def run_threads(call: Callable[[], int], concurrency: int, seconds: float) -> float:
    """Operations per second of ``call`` (returns its op count) from ``concurrency`` threads."""
    done = [0] * concurrency
    stop = time.perf_counter() + seconds

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
    return sum(done) / (time.perf_counter() - start)


async def run_tasks(call: Callable[[], Awaitable[int]], concurrency: int, seconds: float) -> float:
    done = [0] * concurrency
    stop = time.perf_counter() + seconds

    async def worker(slot: int) -> None:
        count = 0
        while time.perf_counter() < stop:
            count += await call()
        done[slot] = count

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return sum(done) / (time.perf_counter() - start)


def best_of(rounds: int, measure: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Alternate the sides round by round (fair under a noisy machine); keep each one's best."""
    best = dict.fromkeys(measure, 0.0)
    for _ in range(rounds):
        for name, fn in measure.items():
            best[name] = max(best[name], fn())
    return best


def sync_scenarios(
    channels: dict[str, grpc.Channel], seconds: float, rounds: int
) -> list[tuple[str, dict[str, float]]]:
    results = []
    unary = {n: c.unary_unary(UNARY, _registered_method=True) for n, c in channels.items()}
    stream = {n: c.unary_stream(STREAM, _registered_method=True) for n, c in channels.items()}

    def unary_op(name: str) -> Callable[[], int]:
        method = unary[name]
        return lambda: (method(PAYLOAD), 1)[1]

    def stream_op(name: str) -> Callable[[], int]:
        method = stream[name]
        return lambda: sum(1 for _ in method(PAYLOAD))

    for name, fn in channels.items():  # warm up connections to all three servers
        for _ in range(30):
            unary_op(name)()
    for concurrency in (1, 16):
        measure = {
            n: (lambda n=n, c=concurrency: run_threads(unary_op(n), c, seconds)) for n in channels
        }
        results.append((f"sync unary, concurrency {concurrency} (calls/s)", best_of(rounds, measure)))
    measure = {n: (lambda n=n: run_threads(stream_op(n), 1, seconds)) for n in channels}
    results.append(("sync server-streaming (messages/s)", best_of(rounds, measure)))
    return results


async def aio_scenarios(
    ports: list[int], lb: lbclient.LoadBalancer, seconds: float, rounds: int
) -> list[tuple[str, dict[str, float]]]:
    channels: dict[str, Any] = {
        "grpcio round_robin": grpc.aio.insecure_channel(
            _ipv4_target(ports), options=[("grpc.lb_policy_name", "round_robin")]
        ),
        "lbclient": lbclient.grpc.aio.insecure_channel("bench", lb),
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

    async def measured(op: Callable[[], Awaitable[int]], concurrency: int) -> float:
        return await run_tasks(op, concurrency, seconds)

    for name in channels:
        for _ in range(30):
            await unary_op(name)()
    results = []
    for label, make, concurrency in (
        ("aio unary, concurrency 1 (calls/s)", unary_op, 1),
        ("aio unary, concurrency 16 (calls/s)", unary_op, 16),
        ("aio server-streaming (messages/s)", stream_op, 1),
    ):
        best = dict.fromkeys(channels, 0.0)
        for _ in range(rounds):
            for name in channels:
                best[name] = max(best[name], await measured(make(name), concurrency))
        results.append((label, best))
    for channel in channels.values():
        await channel.close()
    return results


def _ipv4_target(ports: list[int]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per scenario")
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
            "grpcio round_robin": grpc.insecure_channel(
                _ipv4_target(ports), options=[("grpc.lb_policy_name", "round_robin")]
            ),
            "lbclient": lbclient.grpc.insecure_channel("bench", lb),
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
    print(f"{'scenario':44} {'grpcio rr':>12} {'lbclient':>12} {'ratio':>7}")
    for label, best in results:
        base, ours = best["grpcio round_robin"], best["lbclient"]
        print(f"{label:44} {base:12.0f} {ours:12.0f} {ours / base:7.2f}")


if __name__ == "__main__":
    main()
