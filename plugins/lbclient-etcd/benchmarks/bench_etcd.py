"""etcd plugin numbers, each a ratio against a baseline measured in the same run.

1. Change propagation: a key put → the watching registry publishes the new list, against a
   raw ``/v3/watch`` stream read with httpx (the least any etcd watcher can do), the two
   measured alternately so that load on the machine hits both alike. Both include the
   put's own commit. The registry reopens its watch after each change (from the next
   revision), so a change landing during that reopening arrives from history instead.
2. Request throughput through LoadBalancedTransport with EtcdRegistry, against the same
   balancer over a StaticRegistry: the registry must not be on the request path.

Backends run in a separate process. Bounded: ``--changes`` puts and ``--requests``
requests per round (3 rounds each, interleaved). Usage::

    python plugins/lbclient-etcd/benchmarks/bench_etcd.py [--changes 25] [--requests 1500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import httpx
from lbclient_etcd import EtcdRegistry
from lbclient_etcd._protocol import b64, encode_instance, prefix_end
from lbclient_etcd.testing import EtcdServer

import lbclient
from lbclient import ServiceInstance

BACKENDS = """
import sys, time
from lbclient.testing import HTTPBackend
backends = [HTTPBackend(f"b{n}").start() for n in range(2)]
print(" ".join(str(b.port) for b in backends), flush=True)
sys.stdin.read()
"""


def put(etcd: EtcdServer, key: str, port: int) -> None:
    value = encode_instance(ServiceInstance("x", "127.0.0.1", port))
    etcd.call("/v3/kv/put", {"key": b64(key.encode()), "value": b64(value)})


class Signal:
    """publish() → event; the registry's sink and the raw watcher both set it."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def publish(self, instances: Sequence[ServiceInstance]) -> None:
        self.event.set()

    def fail(self, error: BaseException) -> None:
        print("watch failed:", error, file=sys.stderr)


def measure_once(etcd: EtcdServer, key: str, signal: Signal, port: int) -> float:
    signal.event.clear()
    start = time.perf_counter()
    put(etcd, key, port)
    if not signal.event.wait(10):
        raise RuntimeError("no change seen within 10 s")
    return time.perf_counter() - start


def raw_watch(etcd: EtcdServer, prefix: str, signal: Signal, stop: threading.Event) -> None:
    body = {
        "create_request": {
            "key": b64(prefix.encode()),
            "range_end": b64(prefix_end(prefix.encode())),
        }
    }
    with (
        httpx.Client(timeout=None) as client,
        client.stream("POST", etcd.url + "/v3/watch", json=body) as response,
    ):
        for line in response.iter_lines():
            if stop.is_set():
                return
            if json.loads(line).get("result", {}).get("events"):
                signal.event.set()


def propagation(etcd: EtcdServer, changes: int, gap: float, tag: str) -> dict[str, float]:
    raw, registry_signal, stop = Signal(), Signal(), threading.Event()
    raw_prefix, service = f"/raw{tag}/", f"prop{tag}"
    threading.Thread(target=raw_watch, args=(etcd, raw_prefix, raw, stop), daemon=True).start()
    time.sleep(0.3)
    registry = EtcdRegistry(etcd.url)
    put(etcd, f"/services/{service}/seed", 9999)
    subscription = registry.watch(service, registry_signal)
    registry_signal.event.wait(5)
    raw_times, lb_times = [], []
    for n in range(changes):  # interleaved, so a load spike on the machine hits both
        raw_times.append(measure_once(etcd, f"{raw_prefix}{n}", raw, 10000 + n))
        time.sleep(gap)
        lb_times.append(measure_once(etcd, f"/services/{service}/{n}", registry_signal, 10000 + n))
        time.sleep(gap)
    subscription.close()
    registry.close()
    stop.set()
    raw_median, lb_median = statistics.median(raw_times), statistics.median(lb_times)
    return {
        "raw_watch_median_ms": raw_median * 1000,
        "registry_median_ms": lb_median * 1000,
        "ratio": lb_median / raw_median,
    }


def throughput(etcd: EtcdServer, ports: list[int], requests: int) -> dict[str, float]:
    for port in ports:
        put(etcd, f"/services/bench/{port}", port)
    static = {"bench": [f"127.0.0.1:{p}" for p in ports]}
    rates: dict[str, list[float]] = {"static": [], "etcd": []}
    for _ in range(3):
        for name, registry in (("static", static), ("etcd", EtcdRegistry(etcd.url))):
            with (
                lbclient.LoadBalancer(registry) as lb,
                httpx.Client(  # type: ignore[arg-type]
                    transport=lbclient.LoadBalancedTransport(lb)
                ) as client,
            ):
                client.get("http://bench/warm")
                start = time.perf_counter()
                for _ in range(requests):
                    client.get("http://bench/x")
                rates[name].append(requests / (time.perf_counter() - start))
    static_rate, etcd_rate = max(rates["static"]), max(rates["etcd"])
    return {"static_rps": static_rate, "etcd_rps": etcd_rate, "ratio": etcd_rate / static_rate}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=25)
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    backends = subprocess.Popen(
        [sys.executable, "-c", BACKENDS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert backends.stdout is not None
    assert backends.stdin is not None
    ports = [int(p) for p in backends.stdout.readline().split()]
    try:
        with EtcdServer() as etcd:
            prop = propagation(etcd, args.changes, 0.05, "")
            print(
                f"propagation: raw watch {prop['raw_watch_median_ms']:.2f} ms, EtcdRegistry "
                f"watch {prop['registry_median_ms']:.2f} ms (median of {args.changes}, "
                f"interleaved); ratio {prop['ratio']:.2f}"
            )
            rate = throughput(etcd, ports, args.requests)
            print(
                f"throughput: static {rate['static_rps']:.0f} req/s, etcd "
                f"{rate['etcd_rps']:.0f} req/s (best of 3); ratio {rate['ratio']:.2f}"
            )
    finally:
        backends.stdin.close()
        backends.wait(5)


if __name__ == "__main__":
    main()
