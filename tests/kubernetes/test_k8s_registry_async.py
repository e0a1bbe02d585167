"""KubernetesRegistry from asyncio code: kubernetes.aio list + watch as a task of the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from k8s_support import NS, await_for

from lbclient import AsyncLoadBalancedTransport, LoadBalancer, RegistryAccessDenied
from lbclient.kubernetes import KubernetesRegistry
from lbclient.testing import HTTPBackend
from lbclient.testing.kubernetes import KubernetesTestServer


def registry(configuration: Any, **options: Any) -> KubernetesRegistry:
    return KubernetesRegistry(
        NS, port="http", configuration=configuration, min_backoff=0.02, max_backoff=0.2, **options
    )


@pytest.fixture
async def lb(configuration: Any) -> AsyncIterator[LoadBalancer]:
    balancer = LoadBalancer(registry(configuration))
    yield balancer
    await balancer.aclose()
    await asyncio.sleep(0)  # let the cancelled watch task close its aiohttp session


@pytest.fixture
async def client(lb: LoadBalancer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AsyncLoadBalancedTransport(lb)) as c:
        yield c


def usable(lb: LoadBalancer) -> set[str]:
    state = lb.services.get("orders")
    return {e.instance.address for e in state.usable} if state else set()


async def spread(client: httpx.AsyncClient, n: int) -> set[str]:
    names = set()
    for _ in range(n):
        response = await client.get("http://orders/x")
        assert response.status_code == 200
        names.add(response.json()["backend"])
    return names


def watch_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("lbclient-watch-k8s") and not t.done()
    ]


async def test_scale_up_then_down_through_the_async_transport(
    api: KubernetesTestServer,
    backends: list[HTTPBackend],
    lb: LoadBalancer,
    client: httpx.AsyncClient,
) -> None:
    api.scale(NS, "orders", [b.address for b in backends[:2]])
    assert await spread(client, 8) == {"a", "b"}
    assert watch_tasks()  # watching on this loop, not in a thread
    api.scale(NS, "orders", [b.address for b in backends[:4]])
    delay = await await_for(lambda: len(usable(lb)) == 4)
    print(f"\nasync scale-up propagation: {delay * 1000:.1f} ms")
    assert await spread(client, 20) == {"a", "b", "c", "d"}
    gone = backends[3]
    changed = time.monotonic()
    api.set_conditions(NS, "orders", gone.address, terminating=True)
    await await_for(lambda: gone.address not in usable(lb))
    print(f"async terminating propagation: {(time.monotonic() - changed) * 1000:.1f} ms")
    before = gone.requests
    assert await spread(client, 20) == {"a", "b", "c"}
    assert gone.requests == before


@pytest.mark.parametrize("variant", ["error_event", "http_410"])
async def test_history_compacted_while_watching_relists(
    api: KubernetesTestServer, backends: list[HTTPBackend], lb: LoadBalancer, variant: str
) -> None:
    api.expired_as_http_410 = variant == "http_410"
    api.scale(NS, "orders", [b.address for b in backends[:3]])
    await lb.aservice("orders")
    assert len(usable(lb)) == 3
    await await_for(lambda: api.open_watches == 1)  # the watch after the list is being served
    watches = len(api.watch_requests())
    with api.watches_held():
        api.close_watches()
        await await_for(lambda: len(api.watch_requests()) > watches)
        api.scale(NS, "orders", [b.address for b in backends[2:]])
        api.compact()
    expected = {b.address for b in backends[2:]}
    await await_for(lambda: usable(lb) == expected)
    assert api.expired_watches >= 1
    assert sorted(lb.service("orders").endpoints) == sorted(expected)


async def test_api_server_restart_mid_traffic_fails_no_request(
    api: KubernetesTestServer,
    backends: list[HTTPBackend],
    lb: LoadBalancer,
    client: httpx.AsyncClient,
) -> None:
    api.scale(NS, "orders", [b.address for b in backends[:2]])
    await spread(client, 4)
    statuses: list[int] = []

    async def traffic(stop: asyncio.Event) -> None:
        while not stop.is_set():
            statuses.append((await client.get("http://orders/x")).status_code)

    stop = asyncio.Event()
    worker = asyncio.create_task(traffic(stop))
    try:
        await asyncio.to_thread(api.down)
        await await_for(lambda: lb.service("orders").registry_error is not None)
        await await_for(lambda: len(statuses) > 50)
        api.scale(NS, "orders", [b.address for b in backends[:3]])
        await asyncio.to_thread(api.up)
        delay = await await_for(lambda: len(usable(lb)) == 3)
        print(f"\nasync: recovered {delay * 1000:.0f} ms after the API server came back")
    finally:
        stop.set()
        await worker  # re-raises any failed request
    assert set(statuses) == {200}
    assert lb.service("orders").registry_error is None


async def test_access_denied_and_close_leave_no_task(
    api: KubernetesTestServer, backends: list[HTTPBackend], configuration: Any
) -> None:
    api.scale(NS, "orders", [backends[0].address])
    api.forbid(NS)
    balancer = LoadBalancer(registry(configuration))
    with pytest.raises(RegistryAccessDenied, match="list and watch"):
        await balancer.apick("orders")
    api.allow(NS)
    balancer = LoadBalancer(registry(configuration))
    (await balancer.apick("orders")).done()
    assert len(watch_tasks()) == 1
    await balancer.aclose()
    await await_for(lambda: not watch_tasks())


async def test_without_kubernetes_aio_the_watch_runs_in_a_thread(
    api: KubernetesTestServer,
    backends: list[HTTPBackend],
    configuration: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kubernetes < 37 has no kubernetes.aio: asyncio users get the sync watch in a thread."""
    import threading

    from lbclient.kubernetes import _registry

    monkeypatch.setattr(_registry, "aio_available", lambda: False)
    api.scale(NS, "orders", [backends[0].address])
    balancer = LoadBalancer(registry(configuration))
    (await balancer.apick("orders")).done()
    assert not watch_tasks()
    assert any(t.name.startswith("lbclient-watch-k8s") for t in threading.enumerate())
    api.scale(NS, "orders", [b.address for b in backends[:2]])
    await await_for(lambda: len(usable(balancer)) == 2)
    await balancer.aclose()
