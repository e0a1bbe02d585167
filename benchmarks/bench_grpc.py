"""gRPC benchmark: lbclient's load-balanced channel against grpcio's own round_robin.

Both clients talk to the same three loopback servers, run in a separate process so that they
do not share the client's interpreter lock. grpcio's baseline is one channel to an ``ipv4:``
target listing all three with ``grpc.lb_policy_name=round_robin``; lbclient's is
``lbclient.grpc.insecure_channel`` over a static registry of the same three addresses (also
round_robin). Methods are raw-bytes generic handlers, so no code generation is needed.

A third side, "per-instance channels", is the floor of any balancer built on grpcio's Python
API: one grpcio channel per server, taken in turn by ``itertools.cycle``, with nothing else (no
pick, no in-flight count, no feedback). grpcio offers no way to choose a sub-channel of one
channel from Python, so lbclient has to work this way too; the floor shows what that costs
against grpcio's round_robin, which balances inside one channel in C, and "own" what
lbclient's code adds on top of it.

Scenarios: unary calls/s at concurrency 1 and 16, sync (threads) and aio (tasks), and
server-streaming messages/s (sync and aio, 200 messages of 64 bytes per call). Each scenario
runs in rounds (the three sides back to back, the order rotating each round); a ratio
reported is the median of the per-round ratios.

    python benchmarks/bench_grpc.py                  # ~60 s: 6 scenarios x 11 rounds x 3 x 0.25 s
    python benchmarks/bench_grpc.py --seconds 0.3 --rounds 3
    python benchmarks/bench_grpc.py --own 3000       # lbclient's own wall time per unary call
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import partial
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


BASE, FLOOR, OURS = "grpcio round_robin", "per-instance channels", "lbclient"
SIDES = (BASE, FLOOR, OURS)


class PerInstanceChannels:
    """The floor: one grpcio channel per address, used in turn, nothing else (see above)."""

    def __init__(self, channels: list[Any]) -> None:
        self._channels = channels

    def unary_unary(self, method: str, **kwargs: Any) -> Callable[..., Any]:
        return _in_turn([c.unary_unary(method, **kwargs) for c in self._channels])

    def unary_stream(self, method: str, **kwargs: Any) -> Callable[..., Any]:
        return _in_turn([c.unary_stream(method, **kwargs) for c in self._channels])

    def close(self) -> Any:
        closed = [c.close() for c in self._channels]
        return asyncio.gather(*closed) if closed and closed[0] is not None else None


def _in_turn(callables: list[Callable[..., Any]]) -> Callable[..., Any]:
    turn = itertools.cycle(callables)
    return lambda *args, **kwargs: next(turn)(*args, **kwargs)


class Comparison:
    """Rounds of the three sides back to back, their order rotating: under a noisy shared
    machine the median of the per-round ratios is far steadier than a ratio of averages."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.rates: dict[str, list[float]] = {side: [] for side in SIDES}
        self.cpu: dict[str, list[float]] = {side: [] for side in SIDES}

    def add(self, samples: dict[str, Sample]) -> None:
        for side, (rate, cpu) in samples.items():
            self.rates[side].append(rate)
            self.cpu[side].append(cpu)

    def ratio(self, side: str = OURS) -> float:
        """Throughput, ``side`` / grpcio: the median of the per-round ratios."""
        return statistics.median(
            o / b for b, o in zip(self.rates[BASE], self.rates[side], strict=True)
        )

    def cpu_ratio(self, side: str = OURS) -> float:
        """Client CPU per operation, grpcio / ``side`` (1.0: same cost; below: more)."""
        return statistics.median(b / o for b, o in zip(self.cpu[BASE], self.cpu[side], strict=True))

    @property
    def own_cpu(self) -> float:
        """Client CPU per operation lbclient adds to the floor (us, median of the rounds)."""
        return statistics.median(
            o - f for f, o in zip(self.cpu[FLOOR], self.cpu[OURS], strict=True)
        )

    def median(self, side: str) -> float:
        return statistics.median(self.rates[side])


def _orders(rounds: int) -> Iterator[tuple[str, ...]]:
    """The order of the sides in each round, rotating so that none is always first."""
    for i in range(rounds):
        yield SIDES[i % 3 :] + SIDES[: i % 3]


def compare_sync(
    label: str, rounds: int, measure: Mapping[str, Callable[[], Sample]]
) -> Comparison:
    result = Comparison(label)
    for order in _orders(rounds):
        result.add({side: measure[side]() for side in order})
    return result


async def compare_aio(
    label: str, rounds: int, measure: Mapping[str, Callable[[], Awaitable[Sample]]]
) -> Comparison:
    result = Comparison(label)
    for order in _orders(rounds):
        result.add({side: await measure[side]() for side in order})
    return result


def sync_scenarios(channels: dict[str, Any], seconds: float, rounds: int) -> list[Comparison]:
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
    for label, make, concurrency in (
        ("sync unary, concurrency 1 (calls/s)", unary_op, 1),
        ("sync unary, concurrency 16 (calls/s)", unary_op, 16),
        ("sync server-streaming (messages/s)", stream_op, 1),
    ):
        measure = {side: partial(run_threads, make(side), concurrency, seconds) for side in SIDES}
        results.append(compare_sync(label, rounds, measure))
    return results


async def aio_scenarios(
    ports: list[int], lb: lbclient.LoadBalancer, seconds: float, rounds: int
) -> list[Comparison]:
    channels: dict[str, Any] = {
        BASE: grpc.aio.insecure_channel(
            _ipv4_target(ports), options=[("grpc.lb_policy_name", "round_robin")]
        ),
        FLOOR: PerInstanceChannels([grpc.aio.insecure_channel(a) for a in _addresses(ports)]),
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
        measure = {side: partial(run_tasks, make(side), concurrency, seconds) for side in SIDES}
        results.append(await compare_aio(label, rounds, measure))
    for channel in channels.values():
        await channel.close()
    return results


def _addresses(ports: list[int]) -> list[str]:
    return [f"127.0.0.1:{port}" for port in ports]


# -- own time per call (--own) ---------------------------------------------------------------


class _Timed:
    """A grpcio channel whose unary-unary callables note how long grpcio's own call took
    (``grpc_seconds``), so that a caller's time minus it is what wraps grpcio's call."""

    grpc_seconds = 0.0

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def unary_unary(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        inner = self._channel.unary_unary(*args, **kwargs)

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = inner(*args, **kwargs)
            if isinstance(result, grpc.aio.Call):
                return _TimedAwait(result, start)
            _Timed.grpc_seconds = time.perf_counter() - start
            return result

        return call


class _TimedAwait:
    """An aio call object noting when grpcio's await returned."""

    def __init__(self, call: Any, start: float) -> None:
        self._call = call
        self._start = start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    def __await__(self) -> Any:
        response = yield from self._call.__await__()
        _Timed.grpc_seconds = time.perf_counter() - self._start
        return response


BLOCK = 100
"""--own alternates blocks of this many calls of each side (as a program making many calls
of one kind would, not one of each in turn, which leaves both sides colder)."""


def own_times(ports: list[int], calls: int) -> None:
    """lbclient's own wall time per unary call, measured between real calls: the caller's
    time minus grpcio's call, less the same for the floor (so the timing wrapper and what
    both pay after grpcio's await, the call object's release, cancel out). Medians."""
    addresses = _addresses(ports)
    grpc_insecure, aio_insecure = grpc.insecure_channel, grpc.aio.insecure_channel
    grpc.insecure_channel = lambda *a, **k: _Timed(grpc_insecure(*a, **k))  # type: ignore[assignment]
    grpc.aio.insecure_channel = lambda *a, **k: _Timed(aio_insecure(*a, **k))  # type: ignore[assignment]
    lb = lbclient.LoadBalancer({"bench": addresses})

    def sync() -> dict[str, float]:
        floor = PerInstanceChannels([grpc.insecure_channel(a) for a in addresses])
        ours = lbclient.grpc.insecure_channel("bench", lb)
        times: dict[str, list[float]] = {FLOOR: [], OURS: []}
        methods: dict[str, Callable[..., Any]] = {
            FLOOR: floor.unary_unary(UNARY),
            OURS: ours.unary_unary(UNARY),
        }
        for block in range(calls // BLOCK + 1):  # the first block of each side warms up
            for side, method in methods.items():
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    method(PAYLOAD)
                    if block:
                        times[side].append(time.perf_counter() - start - _Timed.grpc_seconds)
        floor.close()
        ours.close()
        return {side: statistics.median(t) for side, t in times.items()}

    async def aio() -> dict[str, float]:
        floor = PerInstanceChannels([grpc.aio.insecure_channel(a) for a in addresses])
        ours = lbclient.grpc.aio.insecure_channel("bench", lb)
        times: dict[str, list[float]] = {FLOOR: [], OURS: []}
        aio_methods: dict[str, Callable[..., Any]] = {
            FLOOR: floor.unary_unary(UNARY),
            OURS: ours.unary_unary(UNARY),
        }
        for block in range(calls // BLOCK + 1):
            for side, method in aio_methods.items():
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    await method(PAYLOAD)
                    if block:
                        times[side].append(time.perf_counter() - start - _Timed.grpc_seconds)
        await floor.close()
        await ours.close()
        return {side: statistics.median(t) for side, t in times.items()}

    try:
        for label, result in (("sync", sync()), ("aio", asyncio.run(aio()))):
            own = (result[OURS] - result[FLOOR]) * 1e6
            print(
                f"{label:5} unary: lbclient's own time {own:5.1f} us per call"
                f" (medians of {calls} calls, the floor's {result[FLOOR] * 1e6:.1f} us"
                " subtracted)"
            )
    finally:
        grpc.insecure_channel, grpc.aio.insecure_channel = grpc_insecure, aio_insecure
        lb.close()


def _ipv4_target(ports: list[int]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="per measurement")
    parser.add_argument("--rounds", type=int, default=11, help="paired rounds per scenario")
    parser.add_argument(
        "--own",
        type=int,
        metavar="CALLS",
        help="instead: lbclient's own wall time per unary call, over CALLS calls a side",
    )
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
        if args.own:
            own_times(ports, args.own)
            return
        lb = lbclient.LoadBalancer({"bench": _addresses(ports)})
        channels: dict[str, Any] = {
            BASE: grpc.insecure_channel(
                _ipv4_target(ports), options=[("grpc.lb_policy_name", "round_robin")]
            ),
            FLOOR: PerInstanceChannels([grpc.insecure_channel(a) for a in _addresses(ports)]),
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
        f"{'scenario (medians of ' + str(args.rounds) + ' rounds)':38} {'grpcio rr':>9} "
        f"{'floor':>11} {'lbclient':>11} {'own CPU':>8}"
    )
    for r in results:
        print(
            f"{r.label:38} {r.median(BASE):9.0f} "
            f"{r.ratio(FLOOR):5.2f}/{r.cpu_ratio(FLOOR):5.2f} "
            f"{r.ratio(OURS):5.2f}/{r.cpu_ratio(OURS):5.2f} {r.own_cpu:6.1f}us"
        )
    print(
        "grpcio rr: its rate; floor and lbclient: throughput ratio / CPU ratio against grpcio\n"
        "(median per-round ratios: rate/grpcio's rate, grpcio's CPU per op/theirs; 1.0 = same,\n"
        "below 1.0 slower or costlier); own CPU: client CPU per op lbclient adds to the floor"
    )


if __name__ == "__main__":
    main()
