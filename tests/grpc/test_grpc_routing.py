"""Request-aware routing for gRPC: hints, sticky ids and subsets read from call metadata,
through the sync and the aio channels, counted by the servers themselves."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import grpc
import pytest
from lbgrpc_support import EchoBackend, in_flight

import lbclient
import lbclient.grpc
import lbclient.grpc.aio
from lbclient.routing import SubsetRouter


def make(backends: list[EchoBackend], meta: dict[str, list[str]], **settings: Any) -> Any:
    rows = [
        {
            "address": b.address,
            "id": b.name,
            "metadata": {k: v[i] for k, v in meta.items() if v[i]},
        }
        for i, b in enumerate(backends)
    ]
    return lbclient.LoadBalancer({"echo": rows}, **settings)


def calls(
    flavour: str, echo: Any, lb: lbclient.LoadBalancer, metadata: Any, count: int
) -> collections.Counter[str]:
    """``count`` unary calls with ``metadata``; the backends that answered."""
    if flavour == "sync":
        channel = lbclient.grpc.insecure_channel("echo", lb)
        stub = echo.pb2_grpc.EchoStub(channel)
        try:
            return collections.Counter(
                stub.Unary(echo.pb2.Request(), metadata=metadata).backend for _ in range(count)
            )
        finally:
            channel.close()

    async def go() -> collections.Counter[str]:
        channel = lbclient.grpc.aio.insecure_channel("echo", lb)
        stub = echo.pb2_grpc.EchoStub(channel)
        try:
            seen: collections.Counter[str] = collections.Counter()
            for _ in range(count):
                seen[(await stub.Unary(echo.pb2.Request(), metadata=metadata)).backend] += 1
            return seen
        finally:
            await channel.close()

    return asyncio.run(go())


@pytest.fixture(params=["sync", "aio"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def served(backends: list[EchoBackend]) -> dict[str, int]:
    return {b.name: b.calls for b in backends}


def test_hint_from_metadata(flavour, echo, backends):
    lb = make(backends, {"hint": ["x", "y", "y"]}, hint_header="X-SC-LB-Hint")
    assert calls(flavour, echo, lb, (("x-sc-lb-hint", "y"),), 10) == {"b": 5, "c": 5}
    assert calls(flavour, echo, lb, (("x-sc-lb-hint", "nope"),), 9) == {"a": 3, "b": 3, "c": 3}
    assert calls(flavour, echo, lb, None, 3) == {"a": 1, "b": 1, "c": 1}
    assert served(backends) == {"a": 4, "b": 9, "c": 9}
    assert in_flight(lb) == 0
    lb.close()


def test_sticky_id_from_metadata(flavour, echo, backends):
    lb = make(backends, {}, sticky_cookie="lb-instance")
    assert calls(flavour, echo, lb, (("lb-instance", "c"),), 8) == {"c": 8}
    assert served(backends) == {"a": 0, "b": 0, "c": 8}
    lb.close()


def test_subset_and_fail_fallback_from_metadata(flavour, echo, backends):
    router = SubsetRouter("version", header="x-version", fallback="fail")
    lb = make(backends, {"version": ["v1", "v2", "v1"]}, routers=[router])
    assert calls(flavour, echo, lb, (("x-version", "v2"),), 4) == {"b": 4}
    with pytest.raises((lbclient.NoAvailableInstance, grpc.RpcError)) as caught:
        calls(flavour, echo, lb, (("x-version", "v9"),), 1)
    assert "version='v9'" in str(caught.value)
    assert served(backends) == {"a": 0, "b": 4, "c": 0}
    assert in_flight(lb) == 0
    lb.close()


def test_same_instance_for_calls(flavour, echo, backends):
    lb = make(backends, {}, same_instance=True)
    seen = calls(flavour, echo, lb, None, 9)
    assert len(seen) == 1
    assert sum(served(backends).values()) == 9
    lb.close()


def test_priority_levels_for_calls(flavour, echo, backends):
    rows = [
        {"address": b.address, "id": b.name, "priority": 0 if b.name == "a" else 1}
        for b in backends
    ]
    lb = lbclient.LoadBalancer({"echo": rows})
    assert calls(flavour, echo, lb, None, 6) == {"a": 6}  # priority 1 idle while 0 is healthy
    backends[0].stop()  # a is down: connect failures eject it, traffic moves to priority 1
    seen = calls(flavour, echo, lb, None, 12)
    assert seen["a"] == 0
    assert seen["b"] + seen["c"] == 12
    assert in_flight(lb) == 0
    lb.close()
