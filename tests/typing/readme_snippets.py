"""The README's Python snippets, as a user would type them, checked with ``mypy --strict``.

Never run (tests/typing/test_typing.py only type-checks it): the snippets talk to servers.
Each section is a function, so the names the README leaves to the reader (``registry``,
``serve``, the gRPC stub) are parameters with the types a user would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import httpx

import lbclient
import lbclient.grpc


def quick_start() -> None:
    lb = lbclient.LoadBalancer(
        lbclient.StaticRegistry({"orders": ["127.0.0.1:8001", "127.0.0.1:8002", "10.0.0.7:8001"]}),
        scheduler="peak_ewma",
    )
    with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
        client.get("http://orders/api/items")


async def quick_start_async(lb: lbclient.LoadBalancer) -> None:
    async with httpx.AsyncClient(transport=lbclient.AsyncLoadBalancedTransport(lb)) as client:
        await client.get("http://orders/api/items")


def per_service(registry: lbclient.Registry) -> lbclient.LoadBalancer:
    return lbclient.LoadBalancer(
        registry,
        scheduler="peak_ewma",
        services={"search": {"scheduler": "ring_hash"}, "billing": {"retry": lbclient.NO_RETRY}},
    )


def httpx_options(lb: lbclient.LoadBalancer) -> None:
    lbclient.LoadBalancedTransport(lb, host_header="service", tls_server_name="orders.internal")
    lbclient.LoadBalancedTransport(lb, unknown_service="passthrough")
    lbclient.LoadBalancedTransport(lb, httpx.HTTPTransport(retries=0))


def retries(registry: lbclient.Registry) -> None:
    lbclient.RetryPolicy(
        attempts=3, statuses=frozenset({502, 503, 504, 429}), methods=None,
        budget_ratio=0.2, budget_min_per_second=10,
    )  # fmt: skip
    lbclient.RetryPolicy(statuses={502, 503}, methods={"GET", "POST"})
    lbclient.LoadBalancer(registry, retry=lbclient.NO_RETRY)


def hash_keys(client: httpx.Client, lb: lbclient.LoadBalancer) -> None:
    client.get("http://carts/items", extensions={"lb_key": "user-42"})
    lbclient.LoadBalancedTransport(lb, key=lbclient.key_from_header("X-User-Id"))
    lbclient.LoadBalancedTransport(lb, key=lbclient.key_from_cookie("session"))
    lbclient.LoadBalancer(
        registry_of(lb), scheduler="maglev", scheduler_options={"table_size": 5003}
    )


def registry_of(lb: lbclient.LoadBalancer) -> lbclient.Registry:
    return lb.registry


def stats(lb: lbclient.LoadBalancer) -> dict[str, Any]:
    return lb.stats("orders")


class Metrics(lbclient.LoadBalancerListener):
    def on_pick(
        self, service: str, instance: lbclient.ServiceInstance, context: lbclient.PickContext
    ) -> None: ...

    def on_complete(
        self, service: str, instance: lbclient.ServiceInstance, outcome: lbclient.Outcome
    ) -> None: ...

    def on_instances(self, service: str, usable: Sequence[lbclient.ServiceInstance]) -> None: ...


def listeners(registry: lbclient.Registry) -> lbclient.LoadBalancer:
    return lbclient.LoadBalancer(registry, listeners=[Metrics()])


def direct_pick(lb: lbclient.LoadBalancer, call: Callable[[str, int], None]) -> None:
    with lb.pick("orders") as handle:
        call(handle.instance.host, handle.instance.port)


def static_registries() -> None:
    lbclient.StaticRegistry({"orders": ["10.0.0.7:8001", "10.0.0.8:8001"]})
    lbclient.StaticRegistry.from_env()
    lbclient.StaticRegistry.from_file("services.toml", reload_interval=5)
    lbclient.LoadBalancer("static://?orders=10.0.0.7:8001,10.0.0.8:8001")
    lbclient.LoadBalancer("static:///etc/lbclient/services.json")


def consul(serve: Callable[[], None]) -> None:
    lb = lbclient.LoadBalancer(
        lbclient.ConsulRegistry(host="127.0.0.1", port=8500, tags=["v2"], dc="dc1")
    )
    lb = lbclient.LoadBalancer("consul://127.0.0.1:8500?tag=v2&dc=dc1")
    lb.close()
    with lbclient.ConsulRegistrar("orders", port=8001, ttl="10s", deregister_critical_after="1m"):
        serve()


async def consul_async() -> None:
    async with lbclient.AsyncConsulRegistrar("orders", port=8001, ttl=10):
        pass
    lbclient.AsyncConsulRegistry(port=8500)


def kubernetes() -> None:
    lbclient.LoadBalancer(lbclient.KubernetesRegistry(namespace="shop", port="http"))
    lbclient.LoadBalancer("k8s://shop/orders:http")


def health(registry: lbclient.Registry) -> lbclient.LoadBalancer:
    return lbclient.LoadBalancer(
        registry,
        scheduler="least_request",
        health_check=lbclient.HttpHealthCheck("/health", interval=5),
        heartbeat_timeout=30,
        outlier=lbclient.OutlierDetection(consecutive_5xx=3),
        panic_threshold=0.5,
        fail_open=True,
        slow_start=lbclient.SlowStart(window=30),
        zone="eu-west-1a",
        subset_size=100,
    )


def grpc_channels(
    lb: lbclient.LoadBalancer,
    stub: Callable[[grpc.Channel], object],
    my_auth_interceptor: grpc.UnaryUnaryClientInterceptor[Any, Any],
    aio_interceptors: Sequence[grpc.aio.ClientInterceptor],
) -> None:
    channel = lbclient.grpc.insecure_channel("orders", lb, idempotent={"/orders.Orders/Get"})
    stub(channel)
    grpc.intercept_channel(channel, my_auth_interceptor)
    lbclient.grpc.secure_channel("orders", lb, grpc.ssl_channel_credentials(), key="x-user")
    lbclient.grpc.aio.insecure_channel("orders", lb, interceptors=aio_interceptors)
    lbclient.grpc.aio.secure_channel("orders", lb, grpc.ssl_channel_credentials(), retry=None)
