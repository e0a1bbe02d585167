"""Active probes against real servers: HTTP, TCP and gRPC, thresholds, bounds and lifecycle."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import lbclient
from lbclient.health import GrpcHealthCheck, HttpHealthCheck, TcpHealthCheck
from lbclient.testing import HTTPBackend, free_port

from .conftest import (
    FAST_PROBE,
    FileRegistry,
    async_client,
    client,
    lbclient_threads,
    row,
    timer_holders,
    usable_ids,
    wait_until,
)

Make = Callable[[int], list[HTTPBackend]]


def test_off_by_default_and_one_line_to_enable(backends: Make) -> None:
    (a,) = backends(1)
    plain = lbclient.LoadBalancer({"svc": [a.address]})
    probed = lbclient.LoadBalancer({"svc": [a.address]}, health_check=HttpHealthCheck("/health"))
    with plain, probed:
        assert not _has_probe(plain)
        assert _has_probe(probed)


def _has_probe(lb: lbclient.LoadBalancer) -> bool:
    return any(type(f).__name__ == "HealthCheckFilter" for f in lb.service("svc").filters)


def test_http_probe_marks_down_and_up_with_thresholds(backends: Make) -> None:
    a, b = backends(2)
    check = HttpHealthCheck("/health", healthy_threshold=3, unhealthy_threshold=2, **FAST_PROBE)
    lb = lbclient.LoadBalancer({"svc": [a.address, b.address]}, health_check=check)
    with lb:
        wait_until(lambda: row(lb, "svc", a.address)["healthy"] is True)
        a.health_status = 503
        wait_until(lambda: row(lb, "svc", a.address)["healthy"] is False)
        info = row(lb, "svc", a.address)
        assert info["last_probe"] == "HTTP 503"
        assert usable_ids(lb, "svc") == {b.address}
        a.health_status = 200
        wait_until(lambda: row(lb, "svc", a.address)["healthy"] is True)
        assert usable_ids(lb, "svc") == {a.address, b.address}


def test_thresholds_count_consecutive_results() -> None:
    from lbclient.health import ProbeResult
    from lbclient.health._state import ProbeVerdict

    verdict = ProbeVerdict()
    ok, bad = ProbeResult(True, "ok"), ProbeResult(False, "bad")
    assert verdict.usable
    assert verdict.healthy is None
    assert not verdict.record(ok, 2, 3)  # first check decides: healthy (already usable)
    assert verdict.healthy is True
    assert [verdict.record(r, 2, 3) for r in (bad, bad, ok, bad, bad)] == [False] * 5
    assert verdict.record(bad, 2, 3)  # third consecutive failure
    assert verdict.healthy is False
    assert [verdict.record(r, 2, 3) for r in (ok, bad, ok)] == [False] * 3
    assert verdict.record(ok, 2, 3)
    first_bad = ProbeVerdict()
    assert first_bad.record(bad, 2, 3)  # Envoy's first_check: no threshold for the first
    assert first_bad.healthy is False


def test_stopped_backend_fails_tcp_probe_and_comes_back(backends: Make) -> None:
    a, b = backends(2)
    check = TcpHealthCheck(unhealthy_threshold=1, healthy_threshold=1, **FAST_PROBE)
    lb = lbclient.LoadBalancer({"svc": [a.address, b.address]}, health_check=check)
    with lb, client(lb) as http:
        wait_until(lambda: row(lb, "svc", a.address)["healthy"] is True)
        a.stop()
        wait_until(lambda: row(lb, "svc", a.address)["healthy"] is False)
        wait_until(lambda: "ConnectionRefused" in str(row(lb, "svc", a.address)["last_probe"]))
        b_before = b.requests
        for _ in range(10):
            assert http.get("http://svc/x").status_code == 200
        assert b.requests - b_before == 10  # no request even tried the dead one
        a.start()
        wait_until(lambda: row(lb, "svc", a.address)["healthy"] is True)


def test_probes_run_in_the_background_for_async_users(backends: Make) -> None:
    a, b = backends(2)
    check = HttpHealthCheck(unhealthy_threshold=1, **FAST_PROBE)

    async def main() -> None:
        lb = lbclient.LoadBalancer({"svc": [a.address, b.address]}, health_check=check)
        async with lb, async_client(lb) as http:
            a.health_status = 500
            await _await(lambda: row(lb, "svc", a.address)["healthy"] is False)
            for _ in range(6):
                response = await http.get("http://svc/x")
                assert response.json()["backend"] == b.name
        assert not [n for n in lbclient_threads() if n.startswith("lbclient-probe")]

    asyncio.run(main())


async def _await(predicate: Callable[[], object]) -> None:
    deadline = time.monotonic() + 10.0
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def test_no_probe_or_timer_thread_survives_close(backends: Make) -> None:
    servers = backends(3)
    gc.collect()  # balancers other tests dropped without close() release their holds now
    holders, threads = timer_holders(), set(lbclient_threads())
    lb = lbclient.LoadBalancer(
        {"svc": [s.address for s in servers], "other": [servers[0].address]},
        health_check=HttpHealthCheck(**FAST_PROBE),
        heartbeat_timeout=5.0,
        slow_start=lbclient.filters.SlowStart(window=5),
        scheduler="wrr",  # slow start works through weights
    )
    lb.service("svc")
    lb.service("other")
    wait_until(lambda: row(lb, "svc", servers[2].address)["healthy"] is True)
    names = lbclient_threads()
    assert "lbclient-timer" in names
    assert any(n.startswith("lbclient-probe-svc") for n in names)
    assert timer_holders() == holders + 8  # 4 timed filters x 2 services
    lb.close()
    assert timer_holders() == holders
    assert set(lbclient_threads()) == threads  # close() joined them: no waiting needed


def test_a_balancer_dropped_without_close_stops_its_background_work(backends: Make) -> None:
    (a,) = backends(1)
    gc.collect()  # balancers other tests dropped without close() release their holds now
    holders = timer_holders()

    def use_and_forget() -> None:
        lb = lbclient.LoadBalancer({"svc": [a.address]}, health_check=HttpHealthCheck(**FAST_PROBE))
        lb.service("svc")
        wait_until(lambda: row(lb, "svc", a.address)["healthy"] is True)
        assert timer_holders() == holders + 2

    use_and_forget()
    gc.collect()
    assert timer_holders() == holders


def test_probes_stop_when_the_instance_leaves(file_registry: FileRegistry) -> None:
    with _CountingServer() as kept, _CountingServer() as leaving:
        file_registry.write("svc", [kept.address, leaving.address])
        lb = lbclient.LoadBalancer(
            file_registry.registry(), health_check=HttpHealthCheck(**FAST_PROBE)
        )
        with lb:
            lb.service("svc")
            wait_until(lambda: leaving.total >= 2)
            file_registry.write("svc", [kept.address])
            wait_until(lambda: set(lb.service("svc").endpoints) == {kept.address})
            time.sleep(0.1)  # let a probe that was already out finish
            after_removal = leaving.total
            seen_kept = kept.total
            wait_until(lambda: kept.total >= seen_kept + 3)
            assert leaving.total == after_removal


def test_probe_concurrency_is_bounded() -> None:
    with _CountingServer(delay=0.05) as server:
        # 40 instances that are all the same server, so it sees every probe at once
        entries = [{"host": "127.0.0.1", "port": server.port, "id": f"i{n}"} for n in range(40)]
        check = HttpHealthCheck(interval=0.05, jitter=0.0, timeout=2.0, concurrency=3)
        lb = lbclient.LoadBalancer({"svc": entries}, health_check=check)
        with lb:
            lb.service("svc")
            wait_until(lambda: server.total >= 80)
        assert 1 < server.peak <= 3


def test_probe_uses_its_own_port_and_headers(backends: Make) -> None:
    with _CountingServer() as management:
        (a,) = backends(1)
        check = HttpHealthCheck(
            "/ready", port=management.port, headers={"X-Probe": "yes"}, **FAST_PROBE
        )
        lb = lbclient.LoadBalancer({"svc": [a.address]}, health_check=check)
        with lb:
            lb.service("svc")
            wait_until(lambda: management.total >= 1)
            assert management.paths[0] == "/ready"
            assert management.headers[0].get("X-Probe") == "yes"


# -- gRPC ----------------------------------------------------------------------------------


@pytest.fixture
def grpc_server() -> Iterator[tuple[str, Any]]:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("orders.Orders", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


def test_grpc_probe_follows_the_health_service(grpc_server: tuple[str, Any]) -> None:
    from grpc_health.v1 import health_pb2

    address, servicer = grpc_server
    check = GrpcHealthCheck(
        "orders.Orders", unhealthy_threshold=1, healthy_threshold=1, **FAST_PROBE
    )
    lb = lbclient.LoadBalancer({"svc": [address, "127.0.0.1:1"]}, health_check=check)
    with lb:
        wait_until(lambda: row(lb, "svc", address)["healthy"] is True)
        assert row(lb, "svc", address)["last_probe"] == "SERVING"
        servicer.set("orders.Orders", health_pb2.HealthCheckResponse.NOT_SERVING)
        wait_until(lambda: row(lb, "svc", address)["healthy"] is False)
        assert row(lb, "svc", address)["last_probe"] == "NOT_SERVING"
        assert row(lb, "svc", "127.0.0.1:1")["last_probe"] == "gRPC UNAVAILABLE"


def test_grpc_probe_channels_stay_bounded(grpc_server: tuple[str, Any]) -> None:
    from lbclient.filters import HealthCheckFilter
    from lbclient.health._grpc import CHANNEL_CACHE

    address, _ = grpc_server
    host, port = address.rsplit(":", 1)
    entries = [{"host": host, "port": int(port), "id": f"i{n}"} for n in range(40)]
    check = GrpcHealthCheck("orders.Orders", concurrency=2, **FAST_PROBE)
    lb = lbclient.LoadBalancer({"svc": entries}, health_check=check)
    with lb:
        state = lb.service("svc")
        wait_until(lambda: all(row(lb, "svc", f"i{n}")["healthy"] for n in range(40)))
        (probe_filter,) = [f for f in state.filters if isinstance(f, HealthCheckFilter)]
        assert len(probe_filter._prober._stubs) <= CHANNEL_CACHE  # type: ignore[union-attr]


def test_grpc_watch_pushes_changes_without_waiting_for_the_interval(
    grpc_server: tuple[str, Any],
) -> None:
    from grpc_health.v1 import health_pb2

    address, servicer = grpc_server
    check = GrpcHealthCheck(
        "orders.Orders",
        watch=True,
        interval=60,
        jitter=0.0,
        timeout=2.0,
        healthy_threshold=1,
        unhealthy_threshold=1,
    )
    lb = lbclient.LoadBalancer({"svc": [address, "127.0.0.1:1"]}, health_check=check)
    with lb:
        wait_until(lambda: row(lb, "svc", address)["healthy"] is True)
        assert "lbclient-grpc-watch" in lbclient_threads()
        # the interval is a minute: only the stream can make these changes visible now
        servicer.set("orders.Orders", health_pb2.HealthCheckResponse.NOT_SERVING)
        wait_until(lambda: row(lb, "svc", address)["healthy"] is False)
        assert row(lb, "svc", address)["last_probe"] == "NOT_SERVING"
        servicer.set("orders.Orders", health_pb2.HealthCheckResponse.SERVING)
        wait_until(lambda: row(lb, "svc", address)["healthy"] is True)
        assert row(lb, "svc", "127.0.0.1:1")["healthy"] is False
    assert "lbclient-grpc-watch" not in lbclient_threads()


def test_grpc_watch_on_a_server_without_health_service_counts_as_healthy() -> None:
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        check = GrpcHealthCheck(watch=True, **FAST_PROBE)
        lb = lbclient.LoadBalancer({"svc": [address]}, health_check=check)
        with lb:
            wait_until(lambda: row(lb, "svc", address)["healthy"] is True)
            assert "not implemented" in str(row(lb, "svc", address)["last_probe"])
    finally:
        server.stop(None)


def test_grpc_unknown_service_is_unhealthy(grpc_server: tuple[str, Any]) -> None:
    address, _ = grpc_server
    check = GrpcHealthCheck("nope.Nope", **FAST_PROBE)
    lb = lbclient.LoadBalancer({"svc": [address]}, health_check=check, panic_threshold=0)
    with lb:
        wait_until(lambda: row(lb, "svc", address)["healthy"] is False)
        assert row(lb, "svc", address)["last_probe"] == "gRPC NOT_FOUND"


def test_grpc_server_without_health_service_counts_as_healthy() -> None:
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        lb = lbclient.LoadBalancer({"svc": [address]}, health_check=GrpcHealthCheck(**FAST_PROBE))
        with lb:
            wait_until(lambda: row(lb, "svc", address)["healthy"] is True)
            assert "not implemented" in str(row(lb, "svc", address)["last_probe"])
    finally:
        server.stop(None)


def test_grpc_check_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "grpc", None)
    with pytest.raises(lbclient.MissingDependency, match=r"pip install 'lbclient\[grpc\]'"):
        GrpcHealthCheck()


def test_bad_settings_are_configuration_errors() -> None:
    with pytest.raises(lbclient.ConfigurationError, match="healthy_threshold=0 is invalid"):
        HttpHealthCheck(healthy_threshold=0)
    with pytest.raises(lbclient.ConfigurationError, match="starting with '/'"):
        HttpHealthCheck("health")
    with pytest.raises(lbclient.ConfigurationError, match="HttpHealthCheck"):
        lbclient.LoadBalancer({"svc": ["127.0.0.1:1"]}, health_check="/health")
    free_port()


# -- a server that counts what it sees -----------------------------------------------------


class _CountingServer:
    """A tiny HTTP server recording every request and the peak number served at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.total = 0
        self.peak = 0
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._now = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                with owner._lock:
                    owner._now += 1
                    owner.peak = max(owner.peak, owner._now)
                    owner.paths.append(self.path)
                    owner.headers.append(dict(self.headers))
                time.sleep(owner.delay)
                with owner._lock:
                    owner._now -= 1
                    owner.total += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _CountingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def test_probe_headers_never_show_in_reprs_or_stats(backends: Make) -> None:
    (a,) = backends(1)
    check = HttpHealthCheck(headers={"Authorization": "Bearer s3cret"}, **FAST_PROBE)
    assert "s3cret" not in repr(check)
    lb = lbclient.LoadBalancer({"svc": [a.address]}, health_check=check)
    with lb:
        wait_until(lambda: row(lb, "svc", a.address)["healthy"] is True)
        assert "s3cret" not in repr(lb.service("svc").stats())
        assert "s3cret" not in repr(lb.config_for("svc"))
