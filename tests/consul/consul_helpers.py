"""Helpers shared by the Consul tests (a unique module name: tests/consul has no __init__)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from lbclient.testing import HTTPBackend


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
    """lbclient's threads still running. Balancers that other tests dropped without close()
    release theirs when collected, so collect first: only what is still referenced counts."""
    gc.collect()
    return [t.name for t in threading.enumerate() if t.name.startswith("lbclient-")]


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
