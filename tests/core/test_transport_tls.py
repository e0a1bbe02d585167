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
    with pytest.raises(ConfigurationError, match=r"transport=.* is invalid: expected an httpx"):
        _transport(mode, lb, "httpx")
    with pytest.raises(ConfigurationError, match="the callable returned"):
        _transport(mode, lb, lambda: 42)


def _plain() -> dict[str, Any]:
    return {"outlier": None}


# -- a registry entry never downgrades the caller's https:// -------------------------------


def test_an_http_entry_never_carries_an_https_request_in_clear(mode: Mode) -> None:
    """The request fails before anything is sent; the instance is not blamed for it."""
    with HTTPBackend("plain") as backend:
        lb = lbclient.LoadBalancer({"orders": [f"http://{backend.address}"]}, **_plain())
        transport = _transport(mode, lb, None)
        (refused,) = _run(mode, transport, ["https://orders/"])
        assert isinstance(refused, lbclient.SchemeDowngradeRefused)
        assert isinstance(refused, ConfigurationError)
        assert "allow_scheme_downgrade=True" in str(refused)
        assert refused.instance is not None
        assert refused.instance.address == backend.address
        assert backend.requests == 0
        (row,) = lb.stats("orders")["instances"]
        assert row["failures"] == 0
        assert_settled(lb)


def test_downgrade_when_the_user_opts_in_and_the_response_tells_the_truth(mode: Mode) -> None:
    with HTTPBackend("plain") as backend:
        lb = lbclient.LoadBalancer({"orders": [f"http://{backend.address}"]})
        response = _send_one(mode, lb, "https://orders/x", allow_scheme_downgrade=True)
        assert response.status_code == 200
        assert backend.last_headers["Authorization"] == "Bearer t"
    # Sent in clear: the response's request says so.
    assert response.request.url == "http://orders/x"


def test_an_upgrade_to_https_shows_in_the_response(
    mode: Mode, certificate: tuple[Path, Path], tls_backend: HTTPBackend
) -> None:
    lb = lbclient.LoadBalancer({"orders": [f"https://{tls_backend.address}"]})
    response = _send_one(
        mode, lb, "http://orders/x", inner=_factory(mode, certificate), tls_server_name="orders"
    )
    assert response.status_code == 200
    assert response.request.url == "https://orders/x"


def test_allow_scheme_downgrade_must_be_a_bool(mode: Mode) -> None:
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]})
    with pytest.raises(
        ConfigurationError, match=r"allow_scheme_downgrade=.* is invalid: expected True or False"
    ):
        _transport(mode, lb, None, allow_scheme_downgrade="yes")


# -- a port in the service URL is refused, never ignored ------------------------------------


def test_a_port_in_the_service_url_is_refused(mode: Mode) -> None:
    with HTTPBackend("a") as backend:
        lb = lbclient.LoadBalancer({"orders": [backend.address]})
        (refused,) = _run(mode, _transport(mode, lb, None), ["http://orders:8080/x"])
        assert isinstance(refused, ConfigurationError)
        assert "http://orders:8080/x" in str(refused)
        assert "http://orders/..." in str(refused)
        # The scheme's default port is no port at all (httpx drops it).
        (ok,) = _run(mode, _transport(mode, lb, None), ["http://orders:80/x"])
        assert ok == 200
        assert backend.requests == 1
        assert_settled(lb)


def _send_one(
    mode: Mode, lb: lbclient.LoadBalancer, url: str, inner: Any = None, **options: Any
) -> httpx.Response:
    headers = {"Authorization": "Bearer t"}
    if mode == "sync":
        with httpx.Client(transport=_transport(mode, lb, inner, **options)) as client:
            return client.get(url, headers=headers)

    import asyncio

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=_transport(mode, lb, inner, **options)) as client:
            return await client.get(url, headers=headers)

    return asyncio.run(run())


class _Unhashable(httpx.MockTransport):
    """An inner transport that defines equality, and so has no hash."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return self is other


def test_an_unhashable_inner_transport_is_bound_too() -> None:
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:1"], "payments": ["127.0.0.1:1"]})
    inner = _Unhashable(lambda request: httpx.Response(200, content=iter([b"ok"])))
    transport = lbclient.LoadBalancedTransport(lb, inner, tls_server_name="service")
    ok, refused = _run("sync", transport, ["https://orders/", "https://payments/"])
    assert ok == 200
    assert isinstance(refused, ConfigurationError)
    assert_settled(lb)
