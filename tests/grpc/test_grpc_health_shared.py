"""gRPC health probes borrow the load-balanced channel's sub-channels (one connection each).

Real grpcio servers on loopback serve Echo and the standard health service, and record the
peer (the client's TCP connection) and user agent of every call. The load-balanced channel is
built with its own user agent, so its channel arguments differ from the prober's: without the
shared sub-channel, grpcio would open a second connection per instance for the probes.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lbgrpc_support import wait_until

import lbclient
import lbclient.grpc
import lbclient.grpc.aio
from lbclient.health import GrpcHealthCheck

AGENT = "lbtest-pool"
OPTIONS = [("grpc.primary_user_agent", AGENT)]
PROBE = {"interval": 0.05, "jitter": 0.1, "timeout": 10.0}
"""A long timeout: a probe parked by a test must be cut by close(), never time out first."""
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class _Server:
    """Echo plus grpc.health.v1 on 127.0.0.1; ``hold`` parks Check calls until ``release``."""

    def __init__(self, name: str, echo: SimpleNamespace) -> None:
        self.name = name
        self.echo = echo
        self.checks: list[tuple[str, str]] = []
        """(peer, user agent) of every Check call."""
        self.calls: list[str] = []
        """Peers of Echo calls."""
        self.hold = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.health = _Health(self)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        # Echo's other methods: the generated base class's (UNIMPLEMENTED)
        servicer = type("Echo", (_Echo, echo.pb2_grpc.EchoServicer), {})(self)
        echo.pb2_grpc.add_EchoServicer_to_server(servicer, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pool_checks(self) -> list[str]:
        return [peer for peer, agent in self.checks if agent.startswith(AGENT)]

    def stop(self) -> None:
        self.release.set()
        self._server.stop(None).wait(5)


class _Health(health.HealthServicer):  # type: ignore[misc]
    def __init__(self, server: _Server) -> None:
        super().__init__()
        self.server = server

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        agent = dict(context.invocation_metadata()).get("user-agent", "")
        self.server.checks.append((context.peer(), str(agent)))
        if self.server.hold:
            self.server.held.set()
            self.server.release.wait(15)
        return super().Check(request, context)


class _Echo:
    def __init__(self, server: _Server) -> None:
        self.server = server

    def Unary(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.server.calls.append(context.peer())
        return self.server.echo.pb2.Reply(backend=self.server.name, text=request.text)


@pytest.fixture
def servers(echo: SimpleNamespace) -> Iterator[list[_Server]]:
    started = [_Server(name, echo) for name in "ab"]
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def lb(servers: list[_Server]) -> Iterator[lbclient.LoadBalancer]:
    check = GrpcHealthCheck(healthy_threshold=1, unhealthy_threshold=1, **PROBE)
    entries = [{"address": s.address, "id": s.name} for s in servers]
    balancer = lbclient.LoadBalancer(
        {"echo": entries}, health_check=check, panic_threshold=0, scheduler="round_robin"
    )
    yield balancer
    balancer.close()


def _lbclient_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("lbclient-")}


def _usable(lb: lbclient.LoadBalancer) -> set[str]:
    return {e.id for e in lb.service("echo").usable}


def _healthy(lb: lbclient.LoadBalancer, instance_id: str) -> object:
    rows = lb.service("echo").stats()["instances"]
    return next(r for r in rows if r["id"] == instance_id)["healthy"]


def _serve_both(stub: Any, echo: SimpleNamespace, servers: list[_Server]) -> None:
    """Call until every server has answered and has been probed over the shared sub-channel."""
    assert wait_until(
        lambda: (
            stub.Unary(echo.pb2.Request(text="hi"))
            and all(s.calls and s.pool_checks() for s in servers)
        )
    )


def test_probes_run_over_the_sub_channel_of_the_load_balanced_channel(
    echo: SimpleNamespace, servers: list[_Server], lb: lbclient.LoadBalancer
) -> None:
    with lbclient.grpc.insecure_channel("echo", lb, options=OPTIONS) as channel:
        stub = echo.pb2_grpc.EchoStub(channel)
        _serve_both(stub, echo, servers)
        assert lb.service("echo").channels.providers() == [channel]
        for server in servers:  # from here on, every probe and call is on the shared one
            server.checks.clear()
            server.calls.clear()
        assert wait_until(
            lambda: (
                stub.Unary(echo.pb2.Request(text="hi"))
                and all(len(s.checks) >= 3 and s.calls for s in servers)
            )
        )
        for server in servers:
            peers = {peer for peer, _ in server.checks}
            assert len(peers) == 1, f"{server.name}: probes used {peers}"
            assert peers == set(server.calls), f"{server.name}: calls and probes differ"
            assert server.pool_checks() == [peer for peer, _ in server.checks]
        assert len(channel.pool) == 2


def test_probes_never_open_sub_channels_that_no_call_uses(
    echo: SimpleNamespace, servers: list[_Server], lb: lbclient.LoadBalancer
) -> None:
    a, b = servers
    lb.service("echo")  # resolved first: the channel registers when it is built
    with lbclient.grpc.insecure_channel("echo", lb, options=OPTIONS) as channel:
        assert lb.service("echo").channels.providers() == [channel]
        count = len(b.checks)
        assert wait_until(lambda: len(b.checks) >= count + 3)
        assert len(channel.pool) == 0  # no call yet: the prober's own bounded channels
        assert b.pool_checks() == []
        # one call opens one sub-channel: that instance's probes move onto it, not the other's
        reply = echo.pb2_grpc.EchoStub(channel).Unary(echo.pb2.Request(text="x"))
        served, other = (a, b) if reply.backend == "a" else (b, a)
        assert wait_until(lambda: served.pool_checks())
        assert channel.pool.addresses() == [served.address]
        count = len(other.checks)
        assert wait_until(lambda: len(other.checks) >= count + 3)
        assert other.pool_checks() == []


def test_not_serving_takes_the_instance_out_of_the_load_balanced_channel(
    echo: SimpleNamespace, servers: list[_Server], lb: lbclient.LoadBalancer
) -> None:
    _, b = servers
    with lbclient.grpc.insecure_channel("echo", lb, options=OPTIONS) as channel:
        stub = echo.pb2_grpc.EchoStub(channel)
        _serve_both(stub, echo, servers)
        b.health.set("", NOT_SERVING)
        assert wait_until(lambda: _usable(lb) == {"a"})
        assert b.pool_checks(), "b was judged over the shared sub-channel"
        b.calls.clear()
        replies = [stub.Unary(echo.pb2.Request(text=str(n))).backend for n in range(10)]
        assert replies == ["a"] * 10
        assert b.calls == []
        b.health.set("", SERVING)
        assert wait_until(lambda: _usable(lb) == {"a", "b"})
        assert wait_until(lambda: stub.Unary(echo.pb2.Request(text="x")).backend == "b")


def test_closing_the_channel_under_a_probe_falls_back_without_marking_it_down(
    echo: SimpleNamespace,
    servers: list[_Server],
    lb: lbclient.LoadBalancer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, _ = servers
    channel = lbclient.grpc.insecure_channel("echo", lb, options=OPTIONS)
    stub = echo.pb2_grpc.EchoStub(channel)
    _serve_both(stub, echo, servers)
    a.hold = True
    assert a.held.wait(5)  # a probe of a is parked on the channel's sub-channel
    a.hold = False
    own_before = len(a.checks) - len(a.pool_checks())
    with caplog.at_level(logging.WARNING, logger="lbclient.health"):
        channel.close()  # cuts the parked probe (CANCELLED): the prober asks again
        assert wait_until(lambda: len(a.checks) - len(a.pool_checks()) > own_before + 2)
    a.release.set()
    assert lb.service("echo").channels.providers() == []
    assert len(channel.pool) == 0
    assert _healthy(lb, "a") is True
    assert not [r for r in caplog.records if "unhealthy" in r.getMessage()]


def test_probes_on_another_port_keep_their_own_channel(
    echo: SimpleNamespace, servers: list[_Server]
) -> None:
    a, _ = servers
    check = GrpcHealthCheck(port=a.port, **PROBE)
    lb = lbclient.LoadBalancer({"echo": [a.address]}, health_check=check)
    with lb, lbclient.grpc.insecure_channel("echo", lb, options=OPTIONS) as channel:
        stub = echo.pb2_grpc.EchoStub(channel)
        stub.Unary(echo.pb2.Request(text="hi"))
        count = len(a.checks)
        assert wait_until(lambda: len(a.checks) >= count + 3)
        assert a.pool_checks() == []


async def test_aio_channels_do_not_lend_their_sub_channels(
    echo: SimpleNamespace, servers: list[_Server], lb: lbclient.LoadBalancer
) -> None:
    async with lbclient.grpc.aio.insecure_channel("echo", lb) as channel:
        reply = await echo.pb2_grpc.EchoStub(channel).Unary(echo.pb2.Request(text="hi"))
        assert reply.backend in ("a", "b")
        assert lb.service("echo").channels.providers() == []


def test_nothing_outlives_close_and_a_dropped_channel_leaves_the_registry(
    echo: SimpleNamespace, servers: list[_Server]
) -> None:
    before = _lbclient_threads()
    check = GrpcHealthCheck(**PROBE)
    entries = [{"address": s.address, "id": s.name} for s in servers]
    lb = lbclient.LoadBalancer({"echo": entries}, health_check=check)
    kept = lbclient.grpc.insecure_channel("echo", lb, options=OPTIONS)
    dropped = lbclient.grpc.insecure_channel("echo", lb, options=OPTIONS)
    _serve_both(echo.pb2_grpc.EchoStub(kept), echo, servers)
    echo.pb2_grpc.EchoStub(dropped).Unary(echo.pb2.Request(text="hi"))
    channels = lb.service("echo").channels
    assert channels.providers() == [kept, dropped]
    del dropped
    # A probe running right now (every 50 ms) borrows the dropped channel's sub-channel and
    # holds it until it answers; the channel leaves once no probe does.
    assert wait_until(lambda: gc.collect() >= 0 and channels.providers() == [kept])
    lb.close()
    kept.close()
    assert len(kept.pool) == 0
    assert channels.providers() == []
    assert wait_until(lambda: _lbclient_threads() <= before)
