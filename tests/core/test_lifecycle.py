"""Nothing outlives its owner (issue 10, item 6).

``close()`` racing the first pick leaves no thread; a balancer dropped without ``close()``
stops its watches, probes and timers when collected, with a ResourceWarning; a streamed body
dropped without ``close()`` gives its in-flight slot back; the not-found cache is bounded and
each raise is a fresh exception.
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import lbclient
from lbclient import HttpHealthCheck, LoadBalancer, ServiceNotFound
from lbclient._balancer import NOT_FOUND_LIMIT
from lbclient.registry import SnapshotSink, StaticRegistry, Subscription
from lbclient.testing import HTTPBackend


def lbclient_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lbclient-")]


def wait_for(condition: Callable[[], object], timeout: float = 15.0) -> None:
    """Poll ``condition`` until it holds; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


@pytest.fixture
def quiet() -> None:
    """Balancers other tests dropped release their threads now, so only ours count."""
    gc.collect()
    wait_for(lambda: lbclient_threads() == [])


@pytest.fixture
def services_file(tmp_path: Path, backends: list[HTTPBackend]) -> Path:
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"orders": [b.address for b in backends]}))
    return path


class SlowToWatch(StaticRegistry):
    """A followed file whose watch takes a moment to start (as a Consul client's does):
    ``close()`` is let in while the first pick is between resolving and watching."""

    def __init__(self, path: Path) -> None:
        inner = StaticRegistry.from_file(path, reload_interval=0.05)
        super().__init__(dict.fromkeys(inner.services, ""), path=path, reload_interval=0.05)
        self.starting = threading.Event()
        self.go_on = threading.Event()

    def watch(self, service: str, sink: SnapshotSink) -> Subscription:
        self.starting.set()
        self.go_on.wait(10)
        return super().watch(service, sink)


def test_close_between_the_first_resolve_and_its_watch_stops_the_watch(
    quiet: None, services_file: Path
) -> None:
    registry = SlowToWatch(services_file)
    lb = LoadBalancer(registry)
    refused: list[Exception] = []

    def pick() -> None:
        try:
            lb.pick("orders").done()
        except lbclient.NoAvailableInstance as exc:
            refused.append(exc)

    racer = threading.Thread(target=pick)
    racer.start()
    assert registry.starting.wait(10)
    lb.close()
    registry.go_on.set()
    racer.join()
    assert lbclient_threads() == []
    assert "closed" in str(refused[0])


def test_close_racing_the_first_pick_leaves_no_thread(quiet: None, services_file: Path) -> None:
    rng = random.Random(7)
    for _ in range(200):
        lb = LoadBalancer(StaticRegistry.from_file(services_file, reload_interval=0.05))
        start = threading.Barrier(2)

        def pick(lb: LoadBalancer = lb, start: threading.Barrier = start) -> None:
            start.wait()
            with contextlib.suppress(lbclient.NoAvailableInstance):  # closed first: refused
                lb.pick("orders").done()

        racer = threading.Thread(target=pick)
        racer.start()
        start.wait()
        time.sleep(rng.uniform(0, 0.002))  # land anywhere in the first pick's resolution
        lb.close()
        racer.join()
    assert lbclient_threads() == []


def test_a_dropped_balancer_stops_its_work_with_a_resource_warning(
    quiet: None, services_file: Path
) -> None:
    lb = LoadBalancer(
        StaticRegistry.from_file(services_file, reload_interval=0.05),
        health_check=HttpHealthCheck("/health", interval=0.05),
        slow_start=lbclient.SlowStart(window=5.0),
        scheduler="weighted_round_robin",
    )
    lb.pick("orders").done()
    names = set(lbclient_threads())
    assert {"lbclient-watch-static:orders", "lbclient-timer"} <= names
    wait_for(lambda: any(n.startswith("lbclient-probe-") for n in lbclient_threads()))
    with pytest.warns(ResourceWarning, match="LoadBalancer .* was never closed"):
        del lb  # nothing refers to it any more: collected at once, no cycle keeps it
    wait_for(lambda: lbclient_threads() == [])  # the probe pool's workers end at once


def test_a_closed_balancer_warns_nothing_when_dropped(quiet: None, services_file: Path) -> None:
    lb = LoadBalancer(StaticRegistry.from_file(services_file, reload_interval=0.05))
    lb.pick("orders").done()
    lb.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del lb
        gc.collect()
    assert lbclient_threads() == []


def in_flight(lb: LoadBalancer) -> int:
    return sum(row["in_flight"] for row in lb.stats("orders")["instances"])


def test_a_dropped_streamed_response_gives_its_slot_back(backends: list[HTTPBackend]) -> None:
    with LoadBalancer({"orders": [b.address for b in backends]}) as lb:
        client = httpx.Client(transport=lbclient.LoadBalancedTransport(lb))
        with client:
            for _ in range(5):
                response = client.send(client.build_request("GET", "http://orders/x"), stream=True)
                assert response.status_code == 200
            assert in_flight(lb) >= 1  # the last one at least is still referenced
            del response
            gc.collect()
            assert in_flight(lb) == 0
            assert sum(row["failures"] for row in lb.stats("orders")["instances"]) == 0


async def test_a_dropped_async_streamed_response_gives_its_slot_back(
    backends: list[HTTPBackend],
) -> None:
    async with LoadBalancer({"orders": [b.address for b in backends]}) as lb:
        transport = lbclient.AsyncLoadBalancedTransport(lb)
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(5):
                request = client.build_request("GET", "http://orders/x")
                response = await client.send(request, stream=True)
                assert response.status_code == 200
            del response
            gc.collect()
            assert in_flight(lb) == 0


def test_the_not_found_cache_is_bounded_and_raises_fresh_exceptions() -> None:
    with LoadBalancer({"orders": ["127.0.0.1:1"]}) as lb:
        for n in range(NOT_FOUND_LIMIT + 500):
            with pytest.raises(ServiceNotFound):
                lb.pick(f"typo-{n}")
        assert len(lb._not_found) == NOT_FOUND_LIMIT
        assert "typo-0" not in lb._not_found  # the least recently asked went first

        raised = []
        for _ in range(3):
            try:
                lb.pick("typo-900")  # remembered: answered from the cache
            except ServiceNotFound as exc:
                raised.append(exc)
        assert len({id(e) for e in raised}) == 3
        depths = [len(traceback.extract_tb(e.__traceback__)) for e in raised]
        assert depths[0] == depths[1] == depths[2]
        assert all(e.service == "typo-900" for e in raised)
        assert "not in the static registry" in str(raised[0])
