"""Balance an httpx.AsyncClient with peak EWMA: a slow instance gets less traffic.

    python examples/static_httpx_async.py

Starts three real HTTP servers on loopback, one of them 30 ms slower than the others, and
sends 150 requests, 10 at a time.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

import lbclient
from lbclient.testing import HTTPBackend


async def main() -> None:
    with (
        HTTPBackend("fast-1") as fast_1,
        HTTPBackend("fast-2") as fast_2,
        HTTPBackend("slow", delay=0.03) as slow,
    ):
        lb = lbclient.LoadBalancer(
            {"orders": [fast_1.address, fast_2.address, slow.address]}, scheduler="peak_ewma"
        )
        answered: Counter[str] = Counter()
        transport = lbclient.AsyncLoadBalancedTransport(lb)
        async with httpx.AsyncClient(transport=transport) as client:

            async def worker() -> None:
                for _ in range(15):
                    response = await client.get("http://orders/api/items")
                    answered[response.json()["backend"]] += 1

            await asyncio.gather(*(worker() for _ in range(10)))

        print("150 GETs answered by:", dict(sorted(answered.items())))
        for row in lb.stats("orders")["instances"]:
            print(f"  {row['address']:>16}: latency EWMA {row['latency_ewma_ms']:.1f} ms")
        await lb.aclose()


if __name__ == "__main__":
    asyncio.run(main())
