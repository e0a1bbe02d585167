"""TLS identity and scheme stay where the caller put them (issue 10 item 5).

One real HTTPS backend serves two services at the same address; its certificate is valid for
``orders`` only. A connection verified for ``orders`` must never carry a ``payments`` request.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import lbclient
from lbclient import ConfigurationError
from lbclient.testing import HTTPBackend

from ._support import Mode, assert_settled


@pytest.fixture(scope="module")
def certificate(self_signed: Callable[..., tuple[Path, Path]]) -> tuple[Path, Path]:
    """Valid for the name ``orders`` only (not ``payments``, not 127.0.0.1)."""
    return self_signed("orders", "DNS:orders")


@pytest.fixture
def tls_backend(certificate: tuple[Path, Path]) -> Iterator[HTTPBackend]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*certificate)
    with HTTPBackend("tls", tls=server_context) as backend:
        yield backend


def _trust(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def _run(mode: Mode, transport: Any, calls: list[str]) -> list[Any]:
    """GET each URL through one client; each result is a status code or the exception."""
    results: list[Any] = []
    if mode == "sync":
        with httpx.Client(transport=transport) as client:
            for url in calls:
                try:
                    results.append(client.get(url).status_code)
                except Exception as exc:
                    results.append(exc)
        return results

    import asyncio

    async def run() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            for url in calls:
                try:
                    results.append((await client.get(url)).status_code)
                except Exception as exc:
                    results.append(exc)

    asyncio.run(run())
    return results


def _transport(mode: Mode, lb: lbclient.LoadBalancer, inner: Any, **options: Any) -> Any:
    if mode == "sync":
        return lbclient.LoadBalancedTransport(lb, inner, **options)
    return lbclient.AsyncLoadBalancedTransport(lb, inner, **options)


def _factory(mode: Mode, certificate: tuple[Path, Path]) -> Callable[[], Any]:
    trust = _trust(certificate)
    if mode == "sync":
        return lambda: httpx.HTTPTransport(verify=trust)
    return lambda: httpx.AsyncHTTPTransport(verify=trust)


@pytest.mark.parametrize("first", ["orders", "payments"])
def test_a_connection_verified_for_one_service_never_serves_another(
    mode: Mode, certificate: tuple[Path, Path], tls_backend: HTTPBackend, first: str
) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": [tls_backend.address], "payments": [tls_backend.address]}, **_plain()
    )
    transport = _transport(
        mode, lb, _factory(mode, certificate), tls_server_name="service", retry=lbclient.NO_RETRY
    )
    second = "payments" if first == "orders" else "orders"
    results = dict(
        zip(
            [first, second, first + "-again", second + "-again"],
            _run(mode, transport, [f"https://{s}/" for s in (first, second, first, second)]),
            strict=True,
        )
    )
    for name in ("orders", "orders-again"):
        assert results[name] == 200
    for name in ("payments", "payments-again"):
        assert isinstance(results[name], httpx.ConnectError)
        assert "CERTIFICATE_VERIFY_FAILED" in str(results[name])
    assert tls_backend.sni_names.count("payments") == 2  # each payments request shook hands
    assert_settled(lb)


def test_a_literal_name_and_the_url_host_never_share_a_pool(
    mode: Mode, certificate: tuple[Path, Path], tls_backend: HTTPBackend
) -> None:
    """Passthrough to the same address is verified for its URL host (127.0.0.1, which the
    certificate does not cover), even after a connection verified for ``orders`` exists."""
    lb = lbclient.LoadBalancer({"orders": [tls_backend.address]}, **_plain())
    transport = _transport(
        mode,
        lb,
        _factory(mode, certificate),
        tls_server_name="orders",
        unknown_service="passthrough",
        retry=lbclient.NO_RETRY,
    )
    ok, direct = _run(mode, transport, ["https://orders/", tls_backend.url + "/"])
    assert ok == 200
    assert isinstance(direct, httpx.ConnectError)


def test_an_inner_transport_instance_carries_one_server_name_only(
    mode: Mode, certificate: tuple[Path, Path], tls_backend: HTTPBackend
) -> None:
    lb = lbclient.LoadBalancer(
        {"orders": [tls_backend.address], "payments": [tls_backend.address]}, **_plain()
    )
    inner = _factory(mode, certificate)()
    transport = _transport(mode, lb, inner, tls_server_name="service")
    ok, refused = _run(mode, transport, ["https://orders/", "https://payments/"])
    assert ok == 200
    assert isinstance(refused, ConfigurationError)
    assert "'payments'" in str(refused)
    assert "zero-argument callable" in str(refused)
    assert tls_backend.sni_names == ["orders"]  # the refused request was never sent
    assert_settled(lb)
    # The binding holds for every lbclient transport the instance is passed to.
    other = _transport(mode, lb, inner, tls_server_name="payments")
    (refused,) = _run(mode, other, ["https://payments/"])
    assert isinstance(refused, ConfigurationError)


def test_transport_must_be_a_transport_or_a_factory(mode: Mode) -> None:
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]})
    with pytest.raises(ConfigurationError, match="transport must be"):
        _transport(mode, lb, "httpx")
    with pytest.raises(ConfigurationError, match="the callable returned"):
        _transport(mode, lb, lambda: 42)


def _plain() -> dict[str, Any]:
    return {"outlier": None}
