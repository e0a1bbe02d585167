"""Fixtures for the Consul tests: a ConsulTestServer, real HTTP backends, a raw py-consul client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import consul
import httpx
import pytest

from lbclient.testing import HTTPBackend
from lbclient.testing.consul import ConsulTestServer


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
def agent(server: ConsulTestServer) -> Iterator[Any]:
    """py-consul's blocking client pointed at the server, used to set the scene."""
    client = consul.Consul(host="127.0.0.1", port=server.port)
    yield client
    client.http.session.close()


@pytest.fixture
def backends() -> Iterator[list[HTTPBackend]]:
    started = [HTTPBackend(name).start() for name in "ab"]
    yield started
    for backend in started:
        backend.stop()
