"""gRPC load balancing per call, with failover: three local servers, one stopped mid-run.

    python examples/grpc_failover.py

Each server answers ``/demo.Orders/Get`` with its own name (raw bytes, so no generated code
is needed; a generated stub takes the channel the same way). The load-balanced channel
picks an instance for every call, and retries ``Get`` (declared idempotent) on another
instance when one becomes unavailable, so stopping a server costs no failed call. The aio
channel does the same for asyncio code.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent import futures

import grpc

import lbclient
import lbclient.grpc
import lbclient.grpc.aio

GET = "/demo.Orders/Get"


def start_server(name: str) -> tuple[grpc.Server, int]:
    def get(request: bytes, context: grpc.ServicerContext) -> bytes:
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "demo.Orders", {"Get": grpc.unary_unary_rpc_method_handler(get)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def sync_calls(lb: lbclient.LoadBalancer, servers: list[grpc.Server]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    with lbclient.grpc.insecure_channel("orders", lb, idempotent={GET}) as channel:
        get = channel.unary_unary(GET)
        for i in range(30):
            if i == 10:
                servers[1].stop(None).wait()  # "b" goes away mid-run
            counts[get(b"order-1", timeout=5).decode()] += 1
    return dict(sorted(counts.items()))


async def aio_calls(lb: lbclient.LoadBalancer) -> dict[str, int]:
    async with lbclient.grpc.aio.insecure_channel("orders", lb, idempotent={GET}) as channel:
        get = channel.unary_unary(GET)
        replies = await asyncio.gather(*(get(b"order-2", timeout=5) for _ in range(20)))
    return dict(sorted(collections.Counter(r.decode() for r in replies).items()))


def main() -> dict[str, dict[str, int]]:
    started = {name: start_server(name) for name in "abc"}
    servers = [server for server, _ in started.values()]
    lb = lbclient.LoadBalancer(
        {"orders": [{"address": f"127.0.0.1:{port}", "id": n} for n, (_, port) in started.items()]}
    )
    try:
        result = {"sync (b stopped after 10 calls)": sync_calls(lb, servers)}
        result["aio"] = asyncio.run(aio_calls(lb))
        failures = {row["id"]: row["failures"] for row in lb.stats("orders")["instances"]}
        result["failed attempts, retried elsewhere"] = failures
    finally:
        lb.close()
        for server in servers:
            server.stop(None)
    for label, counts in result.items():
        print(f"{label:36} {counts}")
    return result


if __name__ == "__main__":
    main()
