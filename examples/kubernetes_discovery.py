"""Kubernetes discovery without a cluster: EndpointSlices served by lbclient's test API server.

    python examples/kubernetes_discovery.py

Three HTTP "pods" run on loopback; a KubernetesTestServer publishes them as the EndpointSlices
of Service ``orders`` in namespace ``shop``. The balancer lists and watches them through the
official ``kubernetes`` client, so scaling and draining show up in the traffic at once. In a
real cluster, drop the test server and ``configuration=``: the kubeconfig or the pod's service
account is found automatically.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

import httpx
import kubernetes.client

import lbclient
from lbclient.testing import HTTPBackend
from lbclient.testing.kubernetes import KubernetesTestServer

TOKEN = "example-token"


def spread(client: httpx.Client, n: int = 30) -> dict[str, int]:
    counts = collections.Counter(client.get("http://orders/").json()["backend"] for _ in range(n))
    return dict(sorted(counts.items()))


def wait_until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


async def async_users(lb_registry: lbclient.KubernetesRegistry) -> dict[str, int]:
    """The same through httpx.AsyncClient: the watch runs as a task of this event loop."""
    async with (
        lbclient.LoadBalancer(lb_registry) as lb,
        httpx.AsyncClient(transport=lbclient.AsyncLoadBalancedTransport(lb)) as client,
    ):
        answers = [(await client.get("http://orders/")).json()["backend"] for _ in range(20)]
    return dict(sorted(collections.Counter(answers).items()))


def main() -> None:
    pods = [HTTPBackend(f"orders-{i}").start() for i in range(3)]
    with KubernetesTestServer(token=TOKEN) as api:
        api.scale("shop", "orders", [pods[0].address, pods[1].address])
        configuration = kubernetes.client.Configuration(
            host=api.url,
            api_key={"BearerToken": TOKEN},
            api_key_prefix={"BearerToken": "Bearer"},
        )
        registry = lbclient.KubernetesRegistry("shop", port="http", configuration=configuration)
        with (
            lbclient.LoadBalancer(registry) as lb,
            httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client,
        ):
            print("2 pods:          ", spread(client))

            api.scale("shop", "orders", [p.address for p in pods])
            wait_until(lambda: len(lb.service("orders").usable) == 3)
            print("scaled up to 3:  ", spread(client))

            api.set_conditions("shop", "orders", pods[0].address, terminating=True)
            wait_until(lambda: len(lb.service("orders").usable) == 2)
            print("orders-0 drains: ", spread(client))

        async_registry = lbclient.KubernetesRegistry(
            "shop", port="http", configuration=configuration
        )
        print("async client:    ", asyncio.run(async_users(async_registry)))
    for pod in pods:
        pod.stop()


if __name__ == "__main__":
    main()
