"""Many threads and tasks on one balancer: no exception, every count settles back to zero."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter

import httpx
import pytest

import lbclient
from lbclient import Failure
from lbclient.testing import HTTPBackend

from ._support import instances

THREADS = 12
TASKS = 64


def assert_balanced_books(lb: lbclient.LoadBalancer) -> None:
    """No slot leaked, and every pick ended as exactly one success, failure or cancellation."""
    for row in instances(lb, "orders"):
        assert row["in_flight"] == 0, row
        assert row["picks"] >= row["successes"] + row["failures"], row


def test_threads_hammering_picks() -> None:
    lb = lbclient.LoadBalancer(
        {"orders": [f"127.0.0.1:{port}" for port in range(8001, 8011)]}, scheduler="round_robin"
    )
    cancelled = Counter[str]()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(500):
                handle = lb.pick("orders")
                roll = rng.random()
                if roll < 0.6:
                    handle.done()
                elif roll < 0.8:
                    handle.done(Failure.GATEWAY, status=503)
                elif roll < 0.9:
                    handle.cancel()
                    cancelled[threading.current_thread().name] += 1
                else:
                    try:
                        with handle:
                            raise ConnectionResetError
                    except ConnectionResetError:
                        pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = instances(lb, "orders")
    assert sum(r["picks"] for r in rows) == THREADS * 500
    settled = sum(r["successes"] + r["failures"] for r in rows) + sum(cancelled.values())
    assert settled == THREADS * 500
    assert all(r["in_flight"] == 0 for r in rows)


@pytest.fixture
def mixed_backends() -> list[HTTPBackend]:
    """Two healthy backends, one that answers 503 to a third of requests, one a bit slow."""
    started = [
        HTTPBackend("a").start(),
        HTTPBackend("b").start(),
        HTTPBackend("flaky", fail_rate=0.33, seed=7).start(),
        HTTPBackend("slow", delay=0.01).start(),
    ]
    yield started  # type: ignore[misc]
    for backend in started:
        backend.stop()


def test_threads_sharing_a_sync_client(mixed_backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": [b.address for b in mixed_backends]}, scheduler="round_robin"
    )
    statuses = Counter[int]()
    errors: list[BaseException] = []
    lock = threading.Lock()
    client = httpx.Client(
        transport=lbclient.LoadBalancedTransport(lb), limits=httpx.Limits(max_connections=THREADS)
    )

    def worker() -> None:
        try:
            for _ in range(25):
                status = client.get("http://orders/").status_code
                with lock:
                    statuses[status] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert errors == []
    assert sum(statuses.values()) == THREADS * 25
    assert statuses[200] >= THREADS * 25 * 0.95  # flaky 503s are retried elsewhere
    rows = instances(lb, "orders")
    assert all(r["in_flight"] == 0 for r in rows)
    assert sum(r["picks"] for r in rows) == sum(r["successes"] + r["failures"] for r in rows)
    assert sum(b.requests for b in mixed_backends) == sum(r["picks"] for r in rows)


async def test_tasks_sharing_an_async_client(mixed_backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": [b.address for b in mixed_backends]}, scheduler="round_robin"
    )
    transport = lbclient.AsyncLoadBalancedTransport(lb)
    async with httpx.AsyncClient(transport=transport) as client:

        async def worker() -> list[int]:
            return [(await client.get("http://orders/")).status_code for _ in range(5)]

        results = await asyncio.gather(*(worker() for _ in range(TASKS)))
    statuses = Counter(status for result in results for status in result)
    assert sum(statuses.values()) == TASKS * 5
    assert statuses[200] >= TASKS * 5 * 0.95
    rows = instances(lb, "orders")
    assert all(r["in_flight"] == 0 for r in rows)
    assert sum(r["picks"] for r in rows) == sum(r["successes"] + r["failures"] for r in rows)


async def test_cancelled_requests_release_their_slot() -> None:
    cancellations = 0

    class Cancellations(lbclient.LoadBalancerListener):
        def on_complete(self, service: str, instance: object, outcome: lbclient.Outcome) -> None:
            nonlocal cancellations
            cancellations += outcome.cancelled

    with HTTPBackend("slow", delay=1.0) as slow:
        lb = lbclient.LoadBalancer({"orders": [slow.address]}, listeners=[Cancellations()])
        transport = lbclient.AsyncLoadBalancedTransport(lb)
        async with httpx.AsyncClient(transport=transport) as client:
            # asyncio timeouts around the call
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await client.get("http://orders/")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.get("http://orders/"), 0.05)
            # task.cancel() on many requests at once
            tasks = [asyncio.create_task(client.get("http://orders/")) for _ in range(TASKS)]
            await asyncio.sleep(0.1)
            assert sum(row["in_flight"] for row in instances(lb, "orders")) == TASKS
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
        row = instances(lb, "orders")[0]
        assert row["in_flight"] == 0
        assert row["picks"] == TASKS + 4
        assert (row["successes"], row["failures"]) == (0, 0)  # the instance is not blamed
        assert cancellations == TASKS + 4


async def test_cancelled_stream_releases_its_slot(backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]})
    async with httpx.AsyncClient(transport=lbclient.AsyncLoadBalancedTransport(lb)) as client:

        async def hold() -> None:
            async with client.stream("GET", "http://orders/"):
                await asyncio.sleep(10)

        task = asyncio.create_task(hold())
        await asyncio.sleep(0.05)
        assert instances(lb, "orders")[0]["in_flight"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert_balanced_books(lb)
