"""Fixtures for the etcd plugin: a real etcd on loopback (``etcd_path`` comes from the root
conftest) and registrar processes."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest
from lbclient_etcd.testing import EtcdServer

from lbclient import ServiceInstance

REGISTRAR_SCRIPT = """
import sys, time
from lbclient import ServiceInstance
from lbclient_etcd import EtcdRegistrar
uri, service, port, ttl = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with EtcdRegistrar(uri, ServiceInstance(service, "127.0.0.1", port), ttl=ttl):
    print("registered", flush=True)
    sys.stdin.read()   # until the test closes stdin (or kills us)
"""


@pytest.fixture(scope="module")
def etcd(etcd_path: str) -> Iterator[EtcdServer]:
    with EtcdServer(etcd_path) as server:
        yield server


@pytest.fixture
def own_etcd(etcd_path: str) -> Iterator[EtcdServer]:
    """A server of its own, for tests that stop and restart it."""
    with EtcdServer(etcd_path) as server:
        yield server


@pytest.fixture
def registrar_process() -> Iterator[Callable[[str, str, int, float], subprocess.Popen[str]]]:
    """Start ``EtcdRegistrar`` in a separate process; every process is killed at teardown."""
    processes: list[subprocess.Popen[str]] = []

    def start(uri: str, service: str, port: int, ttl: float) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", REGISTRAR_SCRIPT, uri, service, str(port), str(ttl)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "registered"
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


class RecordingSink:
    """A SnapshotSink that records what a watch publishes and lets tests wait for it."""

    def __init__(self) -> None:
        self.published: list[tuple[ServiceInstance, ...]] = []
        self.errors: list[BaseException] = []
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()
        self._cond = threading.Condition()

    def publish(self, instances: Sequence[ServiceInstance]) -> None:
        if not self.gate.is_set():
            self.held.set()
        self.gate.wait(30)  # a test can hold the watch here to make it fall behind
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

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), (self.published, self.errors)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()
