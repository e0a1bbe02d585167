"""Fixtures for the DNS plugin: dnsmasq on loopback and a sink that records a watch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from lbclient import ServiceInstance


class WatchRecorder:
    """A SnapshotSink that records what a watch publishes and lets tests wait for it."""

    def __init__(self) -> None:
        self.published: list[tuple[ServiceInstance, ...]] = []
        self.errors: list[BaseException] = []
        self._cond = threading.Condition()

    def publish(self, instances: Sequence[ServiceInstance]) -> None:
        with self._cond:
            self.published.append(tuple(instances))
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self.errors.append(error)
            self._cond.notify_all()

    @property
    def ports(self) -> set[int]:
        return {i.port for i in self.published[-1]} if self.published else set()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), (self.published, self.errors)


@pytest.fixture
def recorder() -> WatchRecorder:
    return WatchRecorder()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def until() -> Callable[..., None]:
    return wait_until
