"""The interceptor form: balancing for channels built by someone else (sync and aio)."""

from __future__ import annotations

import collections

import grpc
import grpc.aio
import pytest
from lbgrpc_support import in_flight, wait_until

import lbclient.grpc
import lbclient.grpc.aio
from lbclient.grpc._interceptor import message_classes


def test_message_classes_come_from_the_generated_code(echo):
    assert message_classes("/lbtest.Echo/Unary") == (echo.pb2.Request, echo.pb2.Reply)
    assert message_classes(b"/lbtest.Echo/ServerStream") == (echo.pb2.Request, echo.pb2.Reply)
    assert message_classes("/no.Such/Method") is None


def test_interceptor_balances_calls_of_a_channel_it_did_not_build(echo, backends, make_lb):
    lb = make_lb(backends)
    balancer = lbclient.grpc.LoadBalancingInterceptor(lbclient.grpc.insecure_channel("echo", lb))
    # the framework's channel points at one backend; the interceptor spreads protobuf calls
    host = grpc.insecure_channel(backends[0].address)
    stub = echo.pb2_grpc.EchoStub(grpc.intercept_channel(host, balancer))
    counts = collections.Counter(stub.Unary(echo.pb2.Request()).backend for _ in range(9))
    assert counts == {"a": 3, "b": 3, "c": 3}
    reply, call = stub.Unary.with_call(echo.pb2.Request(text="w"), metadata=[("x-k", "v")])
    assert (reply.text, call.code()) == ("w", grpc.StatusCode.OK)
    assert "x-k=v" in reply.metadata
    assert [r.index for r in stub.ServerStream(echo.pb2.Request(count=2))] == [0, 1]
    requests = [echo.pb2.Request(text=t) for t in "ab"]
    assert stub.ClientStream(iter(requests)).text == "a+b"
    assert [r.text for r in stub.BidiStream(iter(requests))] == ["a", "b"]
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request(abort="NOT_FOUND"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert wait_until(lambda: in_flight(lb) == 0)
    assert sum(r["picks"] for r in lb.stats("echo")["instances"]) == 14
    balancer.close()
    host.close()


def test_interceptor_passes_unknown_methods_to_the_host_channel(echo, backends, make_lb):
    lb = make_lb(backends)
    balancer = lbclient.grpc.LoadBalancingInterceptor(lbclient.grpc.insecure_channel("echo", lb))
    host = grpc.intercept_channel(grpc.insecure_channel(backends[1].address), balancer)
    raw = host.unary_unary("/lbtest.Echo/Unary")  # raw bytes: not a Request, passed through
    for _ in range(3):
        assert echo.pb2.Reply.FromString(raw(echo.pb2.Request().SerializeToString())).backend == "b"
    generic = host.unary_unary("/not.In/Pool")
    with pytest.raises(grpc.RpcError) as caught:
        generic(b"")
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED  # answered by backend b itself
    assert "echo" not in lb.services, "nothing went through the balancer"
    balancer.close()


async def test_aio_interceptors_balance_and_keep_retries(echo, backends, make_lb):
    lb = make_lb(backends)
    backends[0].abort_code = grpc.StatusCode.UNAVAILABLE
    lb_channel = lbclient.grpc.aio.insecure_channel("echo", lb, idempotent="all")
    host = grpc.aio.insecure_channel(
        backends[1].address, interceptors=lbclient.grpc.aio.load_balancing_interceptors(lb_channel)
    )
    stub = echo.pb2_grpc.EchoStub(host)
    replies = [await stub.Unary(echo.pb2.Request()) for _ in range(6)]
    assert {r.backend for r in replies} == {"b", "c"}
    backends[0].abort_code = None  # streams are not retried: let a answer again
    assert [r.index async for r in stub.ServerStream(echo.pb2.Request(count=2))] == [0, 1]
    await host.close()
    await lb_channel.close()
    assert in_flight(lb) == 0
