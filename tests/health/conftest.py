"""Fixtures for the health tests: real loopback backends, clients without keep-alive."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

import lbclient
from lbclient.testing import HTTPBackend

FAST_PROBE = {"interval": 0.05, "timeout": 2.0, "jitter": 0.1}
"""Probe settings that make state changes happen within a fraction of a second (the timeout
stays generous: on a loaded machine a healthy backend must never time out)."""


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll until ``predicate()`` is true; fail the test if it never becomes true.

    This waits for an event with a generous ceiling; it never asserts on how long it took.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition never became true: {predicate}")
        time.sleep(0.01)


def lbclient_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lbclient-")]


def timer_holders() -> int:
    """How many filters hold the shared timer thread (0: the thread is stopped)."""
    from lbclient.health import _timer

    return _timer._holders


def row(lb: lbclient.LoadBalancer, service: str, instance_id: str) -> dict[str, object]:
    for item in lb.service(service).stats()["instances"]:
        if item["id"] == instance_id:
            return dict(item)
    raise AssertionError(f"{instance_id} not in stats")


def usable_ids(lb: lbclient.LoadBalancer, service: str) -> set[str]:
    return {e.id for e in lb.service(service).usable}


def client(lb: lbclient.LoadBalancer, **options: object) -> httpx.Client:
    # A fresh connection per request: HTTPBackend.stop() closes its listener, and a stopped
    # backend must look dead (connection refused), not keep answering on a kept-alive socket.
    inner = httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    return httpx.Client(transport=lbclient.LoadBalancedTransport(lb, inner, **options))


def async_client(lb: lbclient.LoadBalancer, **options: object) -> httpx.AsyncClient:
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    return httpx.AsyncClient(transport=lbclient.AsyncLoadBalancedTransport(lb, inner, **options))


@pytest.fixture
def backends() -> Iterator[Callable[[int], list[HTTPBackend]]]:
    started: list[HTTPBackend] = []

    def make(count: int) -> list[HTTPBackend]:
        new = [HTTPBackend(f"b{len(started) + i}").start() for i in range(count)]
        started.extend(new)
        return new

    yield make
    for backend in started:
        backend.stop()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test here closes what it opens: no lbclient thread it started may outlive it.

    Threads that existed before (a balancer another test left open) are not ours to judge.
    """
    before = set(lbclient_threads())
    yield
    wait_until(lambda: set(lbclient_threads()) <= before, timeout=5.0)


class FileRegistry:
    """A StaticRegistry backed by a JSON file that the test rewrites to change membership."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, service: str, entries: list[object]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({service: entries}))
        tmp.replace(self.path)

    def registry(self) -> lbclient.StaticRegistry:
        return lbclient.StaticRegistry.from_file(self.path, reload_interval=0.02)


@pytest.fixture
def file_registry(tmp_path: Path) -> FileRegistry:
    return FileRegistry(tmp_path / "services.json")
