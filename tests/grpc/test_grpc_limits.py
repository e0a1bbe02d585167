"""Concurrency limits and the circuit breaker through the sync and aio gRPC channels.

A server-streaming call whose first message was read stays active on its instance and holds
its slot until cancelled: that is how a test fills a limit without depending on delays.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest
from lbgrpc_support import in_flight, wait_until

import lbclient
import lbclient.grpc
import lbclient.grpc.aio
from lbclient import CircuitBreaker, CircuitOpen, LBError, Overloaded

S = grpc.StatusCode
BREAKER = CircuitBreaker(failure_rate=0.5, minimum_calls=2, window=2, open_for=30)


def limits(lb: lbclient.LoadBalancer) -> dict[str, Any]:
    stats: dict[str, Any] = lb.stats("echo")["limits"]
    return stats


def released(lb: lbclient.LoadBalancer) -> bool:
    row = limits(lb)
    return in_flight(lb) == 0 and row.get("in_flight", 0) == 0 and row.get("pending", 0) == 0


def test_sync_overflow_is_resource_exhausted_and_overloaded(echo, backends, make_lb):
    lb = make_lb(backends, max_requests=1)
    channel = lbclient.grpc.insecure_channel("echo", lb)
    stub = echo.pb2_grpc.EchoStub(channel)
    stream = stub.ServerStream(echo.pb2.Request(count=2, sleep=30))
    next(stream)  # the call is running and holds the only slot
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request())
    error = caught.value
    assert error.code() is S.RESOURCE_EXHAUSTED
    assert isinstance(error, Overloaded)
    assert isinstance(error, LBError)
    assert error.limit == "max_requests"
    assert "max_requests=1" in error.details()
    future = stub.Unary.future(echo.pb2.Request())  # future(): a finished, failed call
    assert future.code() is S.RESOURCE_EXHAUSTED
    assert limits(lb)["refused_overflow"] == 2
    stream.cancel()
    assert wait_until(lambda: released(lb))
    assert stub.Unary(echo.pb2.Request()).backend in "abc"
    assert wait_until(lambda: released(lb))
    channel.close()


def test_sync_waiter_gets_the_slot_when_the_stream_ends(echo, backends, make_lb):
    lb = make_lb(backends, max_requests=1, max_pending=1, pending_timeout=30)
    channel = lbclient.grpc.insecure_channel("echo", lb)
    stub = echo.pb2_grpc.EchoStub(channel)
    stream = stub.ServerStream(echo.pb2.Request(count=2, sleep=30))
    next(stream)
    replies: list[Any] = []
    waiter = threading.Thread(target=lambda: replies.append(stub.Unary(echo.pb2.Request())))
    waiter.start()
    assert wait_until(lambda: limits(lb)["pending"] == 1)
    stream.cancel()
    waiter.join(30)
    assert len(replies) == 1
    assert wait_until(lambda: released(lb))
    channel.close()


def test_sync_open_breaker_is_unavailable_and_circuit_open(echo, backends, make_lb):
    for backend in backends:
        backend.abort_code = S.INTERNAL
    lb = make_lb(backends, circuit_breaker=BREAKER)
    channel = lbclient.grpc.insecure_channel("echo", lb)
    stub = echo.pb2_grpc.EchoStub(channel)
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Unary(echo.pb2.Request())
        assert caught.value.code() is S.INTERNAL
    calls = sum(b.calls for b in backends)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request())
    error = caught.value
    assert error.code() is S.UNAVAILABLE
    assert isinstance(error, CircuitOpen)
    assert 0 < error.retry_in <= 30
    assert sum(b.calls for b in backends) == calls
    assert limits(lb)["circuit_breaker"]["state"] == "open"
    channel.close()


async def test_aio_overflow_is_resource_exhausted_and_overloaded(echo, backends, make_lb):
    lb = make_lb(backends, max_requests=1)
    async with lbclient.grpc.aio.insecure_channel("echo", lb) as channel:
        stub = echo.pb2_grpc.EchoStub(channel)
        stream = stub.ServerStream(echo.pb2.Request(count=2, sleep=30))
        await stream.read()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Unary(echo.pb2.Request())
        error = caught.value
        assert error.code() is S.RESOURCE_EXHAUSTED
        assert isinstance(error, Overloaded)
        assert error.limit == "max_requests"
        stream.cancel()
        for _ in range(500):
            if released(lb):
                break
            await asyncio.sleep(0.01)
        assert (await stub.Unary(echo.pb2.Request())).backend in "abc"
    assert wait_until(lambda: released(lb))


async def test_aio_waiters_in_order_and_cancelled_ones_leave(echo, backends, make_lb):
    lb = make_lb(backends, max_requests=1, max_pending=3, pending_timeout=30)
    async with lbclient.grpc.aio.insecure_channel("echo", lb) as channel:
        stub = echo.pb2_grpc.EchoStub(channel)
        stream = stub.ServerStream(echo.pb2.Request(count=2, sleep=30))
        await stream.read()
        order: list[int] = []

        async def call(index: int) -> None:
            await stub.Unary(echo.pb2.Request())
            order.append(index)

        tasks = []
        for index in range(3):
            tasks.append(asyncio.create_task(call(index)))
            for _ in range(500):
                if limits(lb)["pending"] == index + 1:
                    break
                await asyncio.sleep(0.005)
        assert limits(lb)["pending"] == 3
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        assert limits(lb)["pending"] == 2
        stream.cancel()
        await asyncio.gather(tasks[0], tasks[2])
        assert order == [0, 2]
    assert wait_until(lambda: released(lb))


async def test_aio_open_breaker_is_unavailable_and_circuit_open(echo, backends, make_lb):
    for backend in backends:
        backend.abort_code = S.INTERNAL
    lb = make_lb(backends, circuit_breaker=BREAKER)
    async with lbclient.grpc.aio.insecure_channel("echo", lb) as channel:
        stub = echo.pb2_grpc.EchoStub(channel)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Unary(echo.pb2.Request())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Unary(echo.pb2.Request())
        assert caught.value.code() is S.UNAVAILABLE
        assert isinstance(caught.value, CircuitOpen)
        assert "circuit breaker" in caught.value.details()


def test_sync_stream_restarts_stay_in_the_call_slot(echo, backends, make_lb):
    """A server stream that fails before its first message starts again elsewhere; the
    restart belongs to the same call, so the call's one slot stays taken throughout."""
    backends[0].abort_code = S.UNAVAILABLE
    backends[1].abort_code = S.UNAVAILABLE
    lb = make_lb(backends, max_requests=1, outlier=None)
    channel = lbclient.grpc.insecure_channel("echo", lb, idempotent="all")
    stub = echo.pb2_grpc.EchoStub(channel)
    for _ in range(6):  # until a stream needed a restart (round robin starts anywhere)
        calls = sum(b.calls for b in backends)
        stream = stub.ServerStream(echo.pb2.Request(count=2, sleep=30))
        assert next(stream).backend == "c"
        restarted = sum(b.calls for b in backends) - calls > 1
        if restarted:
            break
        stream.cancel()
        assert wait_until(lambda: released(lb))
    assert restarted
    assert limits(lb)["in_flight"] == 1
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request())
    assert caught.value.code() is S.RESOURCE_EXHAUSTED
    stream.cancel()
    assert wait_until(lambda: released(lb))
    channel.close()


async def test_aio_stream_restarts_stay_in_the_call_slot(echo, backends, make_lb):
    backends[0].abort_code = S.UNAVAILABLE
    backends[1].abort_code = S.UNAVAILABLE
    lb = make_lb(backends, max_requests=1, outlier=None)
    async with lbclient.grpc.aio.insecure_channel("echo", lb, idempotent="all") as channel:
        stub = echo.pb2_grpc.EchoStub(channel)
        for _ in range(6):
            calls = sum(b.calls for b in backends)
            stream = stub.ServerStream(echo.pb2.Request(count=2, sleep=30))
            assert (await stream.read()).backend == "c"
            restarted = sum(b.calls for b in backends) - calls > 1
            if restarted:
                break
            stream.cancel()
            for _ in range(500):
                if released(lb):
                    break
                await asyncio.sleep(0.01)
        assert restarted
        assert limits(lb)["in_flight"] == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Unary(echo.pb2.Request())
        assert caught.value.code() is S.RESOURCE_EXHAUSTED
        stream.cancel()
    assert wait_until(lambda: released(lb))
