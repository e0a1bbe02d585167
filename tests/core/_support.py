"""Helpers shared by the core tests: one request through either transport, and invariants."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Literal

import httpx

import lbclient

Mode = Literal["sync", "async"]

PLAIN: dict[str, Any] = (
    {"outlier": None}
    if "outlier" in {f.name for f in dataclasses.fields(lbclient.ServiceConfig)}
    else {}
)
"""Balancer settings without passive outlier ejection, so that a test of the transport's own
retry rules can send many failures to one instance and still count exactly where they went."""


def send(
    mode: Mode,
    lb: lbclient.LoadBalancer,
    method: str,
    url: str,
    *,
    options: dict[str, Any] | None = None,
    inner: Any = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request through LoadBalancedTransport or its async twin; the body is read."""
    if mode == "sync":
        transport = lbclient.LoadBalancedTransport(lb, inner, **(options or {}))
        with httpx.Client(transport=transport) as client:
            response = client.request(method, url, **kwargs)
            response.read()
            return response

    async def run() -> httpx.Response:
        transport = lbclient.AsyncLoadBalancedTransport(lb, inner, **(options or {}))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.request(method, url, **kwargs)
            await response.aread()
            return response

    return asyncio.run(run())


def instances(lb: lbclient.LoadBalancer, service: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = lb.stats(service)["instances"]
    return rows


def assert_settled(lb: lbclient.LoadBalancer) -> None:
    """Nothing in flight, and every pick was completed exactly once."""
    for service, stats in lb.stats().items():
        for row in stats["instances"]:
            assert row["in_flight"] == 0, (service, row)
            assert row["picks"] >= row["successes"] + row["failures"], (service, row)


class Recording(httpx.BaseTransport):
    """Wraps a real transport and remembers every request it was asked to send."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncRecording(httpx.AsyncBaseTransport):
    """The asyncio twin of Recording."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
