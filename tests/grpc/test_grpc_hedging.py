"""Hedged unary calls on the sync and aio channels, against real grpcio servers."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from lbgrpc_support import in_flight, wait_until

import lbclient
import lbclient.grpc
import lbclient.grpc.aio
from lbclient import HedgePolicy, LoadBalancerListener, Outcome

UNARY = "/lbtest.Echo/Unary"
HEDGE = HedgePolicy(delay=0.05, budget_ratio=1.0)


class Outcomes(LoadBalancerListener):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Outcome]] = []

    def on_complete(self, service: str, instance: Any, outcome: Outcome) -> None:
        self.seen.append((instance.id, outcome))


def slow_and_fast(backends: list[Any]) -> tuple[Any, Any]:
    slow, fast = backends[0], backends[1]
    slow.delay = 5.0
    return slow, fast


def test_sync_hedge_beats_a_slow_attempt_and_the_loser_is_cancelled(echo, backends, make_lb):
    listener = Outcomes()
    slow, _fast = slow_and_fast(backends)
    lb = make_lb(backends[:2], hedge=HEDGE, listeners=[listener])
    channel = lbclient.grpc.insecure_channel("echo", lb, idempotent={UNARY})
    stub = echo.pb2_grpc.EchoStub(channel)
    try:
        answers = [stub.Unary(echo.pb2.Request(text=str(i))).backend for i in range(6)]
        reply, call = stub.Unary.with_call(echo.pb2.Request(text="w"))
        assert answers == ["b"] * 6
        assert reply.backend == "b"
        assert call.code() is grpc.StatusCode.OK
        assert wait_until(lambda: in_flight(lb) == 0)
        on_slow = [o for i, o in listener.seen if i == "a"]
        assert on_slow
        assert all(o.cancelled for o in on_slow)
        assert lb.stats("echo")["hedges"] == len(on_slow)
        assert slow.cancelled.wait(5)  # the server saw the cancellation
    finally:
        channel.close()


def test_sync_methods_outside_idempotent_are_never_hedged(echo, backends, make_lb):
    slow, _fast = slow_and_fast(backends)
    slow.delay = 0.3
    lb = make_lb(backends[:2], hedge=HEDGE)
    channel = lbclient.grpc.insecure_channel("echo", lb)
    stub = echo.pb2_grpc.EchoStub(channel)
    try:
        answers = {stub.Unary(echo.pb2.Request()).backend for _ in range(4)}
        assert answers == {"a", "b"}
        assert lb.stats("echo")["hedges"] == 0
    finally:
        channel.close()


def test_sync_channel_option_and_all_attempts_failing(echo, backends, make_lb):
    for backend in backends:
        backend.abort_code = grpc.StatusCode.UNAVAILABLE
    lb = make_lb(backends)
    channel = lbclient.grpc.insecure_channel(
        "echo", lb, idempotent="all", hedge=HedgePolicy(delay=0.001, budget_ratio=1.0)
    )
    stub = echo.pb2_grpc.EchoStub(channel)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Unary(echo.pb2.Request())
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert wait_until(lambda: in_flight(lb) == 0)
    finally:
        channel.close()


def test_channel_hedge_option_is_validated(backends, make_lb):
    with pytest.raises(lbclient.ConfigurationError, match="hedge"):
        lbclient.grpc.insecure_channel("echo", make_lb(backends), hedge="p95")


async def test_aio_hedge_beats_a_slow_attempt_and_in_flight_settles(echo, backends, make_lb):
    listener = Outcomes()
    _slow, _fast = slow_and_fast(backends)
    lb = make_lb(backends[:2], hedge=HEDGE, listeners=[listener])
    channel = lbclient.grpc.aio.insecure_channel("echo", lb, idempotent={UNARY})
    stub = echo.pb2_grpc.EchoStub(channel)
    try:
        replies = await asyncio.gather(*(stub.Unary(echo.pb2.Request()) for _ in range(20)))
        assert {r.backend for r in replies} == {"b"}
        call = stub.Unary(echo.pb2.Request())
        assert (await call).backend == "b"
        assert await call.code() is grpc.StatusCode.OK
        for _ in range(200):
            if in_flight(lb) == 0:
                break
            await asyncio.sleep(0.01)
        assert in_flight(lb) == 0
        on_slow = [o for i, o in listener.seen if i == "a"]
        assert on_slow
        assert all(o.cancelled for o in on_slow)
        assert all(o.ok for i, o in listener.seen if i == "b")
    finally:
        await channel.close()


async def test_aio_caller_cancelling_a_hedged_call_releases_everything(echo, backends, make_lb):
    for backend in backends:
        backend.delay = 5.0
    lb = make_lb(backends, hedge=HedgePolicy(delay=0.01, max_hedges=2, budget_ratio=1.0))
    channel = lbclient.grpc.aio.insecure_channel("echo", lb, idempotent="all")
    stub = echo.pb2_grpc.EchoStub(channel)
    try:
        call = stub.Unary(echo.pb2.Request())
        for _ in range(200):
            if in_flight(lb) == 3:
                break
            await asyncio.sleep(0.01)
        assert in_flight(lb) == 3  # the first attempt and both hedges, one per instance
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert in_flight(lb) == 0
        assert all(r["failures"] == 0 for r in lb.stats("echo")["instances"])
    finally:
        await channel.close()


async def test_aio_all_attempts_failing_end_as_an_unhedged_call_would(echo, backends, make_lb):
    for backend in backends:
        backend.abort_code = grpc.StatusCode.UNAVAILABLE
        backend.delay = 0.05  # answers after the hedge delay: every round is hedged
    lb = make_lb(backends, hedge=HedgePolicy(delay=0.01, budget_ratio=1.0))
    channel = lbclient.grpc.aio.insecure_channel("echo", lb, idempotent="all")
    stub = echo.pb2_grpc.EchoStub(channel)
    try:
        call = stub.Unary(echo.pb2.Request())
        with pytest.raises(grpc.RpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert await call.code() is grpc.StatusCode.UNAVAILABLE
        assert lb.stats("echo")["hedges"] >= 1
        assert in_flight(lb) == 0
    finally:
        await channel.close()


async def test_aio_methods_outside_idempotent_are_never_hedged(echo, backends, make_lb):
    backends[0].delay = 0.2
    lb = make_lb(backends[:2], hedge=HEDGE)
    channel = lbclient.grpc.aio.insecure_channel("echo", lb)
    stub = echo.pb2_grpc.EchoStub(channel)
    try:
        replies = [await stub.Unary(echo.pb2.Request()) for _ in range(4)]
        assert {r.backend for r in replies} == {"a", "b"}
        assert lb.stats("echo")["hedges"] == 0
    finally:
        await channel.close()
