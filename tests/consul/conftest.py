"""Fixtures for the Consul tests: a ConsulTestServer, real HTTP backends, a raw py-consul client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import consul
import httpx
import pytest

from lbclient.testing import HTTPBackend
from lbclient.testing.consul import ConsulTestServer


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> float:
    """Poll until ``predicate()`` is true and return how long it took (never asserted on);
    fail the test if it stays false past the generous ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition never became true: {predicate}")
        time.sleep(0.005)
    return time.monotonic() - start


def lbclient_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lbclient-")]


@pytest.fixture
def server() -> Iterator[ConsulTestServer]:
    """A Consul stand-in whose reaper runs every 0.1 s and honours any positive
    DeregisterCriticalServiceAfter (real Consul: every 30 s, at least 1 min)."""
    with ConsulTestServer(
        node_meta={"rack": "r1", "zone": "node-zone"}, reap_interval=0.1, min_deregister=0.0
    ) as srv:
        yield srv


@pytest.fixture
def http(server: ConsulTestServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
def agent(server: ConsulTestServer) -> Any:
    """py-consul's blocking client pointed at the server, used to set the scene."""
    return consul.Consul(host="127.0.0.1", port=server.port)


@pytest.fixture
def backends() -> Iterator[list[HTTPBackend]]:
    started = [HTTPBackend(name).start() for name in "ab"]
    yield started
    for backend in started:
        backend.stop()


def register(agent: Any, backend: HTTPBackend, *, status: str = "passing", **extra: Any) -> None:
    """Register ``backend`` as an instance of ``orders`` with a long TTL check in ``status``."""
    check = {"CheckID": f"service:{backend.name}", "TTL": "60s", "Status": status}
    check.update(extra.pop("check", {}))
    agent.agent.service.register(
        extra.pop("name", "orders"),
        service_id=backend.name,
        address="127.0.0.1",
        port=backend.port,
        check=check,
        **extra,
    )
