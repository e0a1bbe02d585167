"""Where the transports send a request: URL rewrite, Host header, TLS server name, unknown hosts."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import lbclient
from lbclient import ConfigurationError, ServiceNotFound
from lbclient.testing import HTTPBackend

from ._support import AsyncRecording, Mode, Recording, assert_settled, send


def test_url_is_rewritten_to_the_instance(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends]})
    seen = set()
    for _ in range(6):
        response = send(mode, lb, "GET", "http://orders/api/items?q=a%20b&page=2")
        body = response.json()
        assert response.status_code == 200
        assert body["path"] == "/api/items?q=a%20b&page=2"
        # The caller's view is unchanged: the response belongs to the request it made.
        assert response.request.url == "http://orders/api/items?q=a%20b&page=2"
        seen.add(body["backend"])
    assert seen == {"a", "b", "c"}  # round robin over the three
    assert_settled(lb)


def test_post_body_and_method_are_forwarded(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]})
    response = send(mode, lb, "POST", "http://orders/items", json={"sku": 7})
    assert response.json()["method"] == "POST"
    assert backends[0].last_headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("host_header", "expected"),
    [("instance", None), ("service", "orders"), ("api.example.com", "api.example.com")],
)
def test_host_header(mode: Mode, host_header: str, expected: str | None) -> None:
    with HTTPBackend("a") as backend:
        lb = lbclient.LoadBalancer({"orders": [backend.address]})
        options = {"host_header": host_header}
        response = send(mode, lb, "GET", "http://orders/", options=options)
    assert response.json()["host"] == (expected or backend.address)


@pytest.fixture(scope="module")
def certificate(self_signed: Callable[..., tuple[Path, Path]]) -> tuple[Path, Path]:
    """A self-signed certificate valid for the service name, a literal name and 127.0.0.1."""
    return self_signed("orders", "DNS:orders", "DNS:orders.internal", "IP:127.0.0.1")


@pytest.fixture
def tls_backend(certificate: tuple[Path, Path]) -> Iterator[HTTPBackend]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*certificate)
    with HTTPBackend("tls", tls=server_context) as backend:
        yield backend


@pytest.mark.parametrize(
    ("tls_server_name", "sent"),
    [("instance", None), ("service", "orders"), ("orders.internal", "orders.internal")],
)
def test_tls_server_name(
    mode: Mode,
    certificate: tuple[Path, Path],
    tls_backend: HTTPBackend,
    tls_server_name: str,
    sent: str | None,
) -> None:
    """The name reaches the inner transport as httpx's ``sni_hostname`` extension, then the
    server (as SNI), and the certificate is verified against it. An IP address sends no SNI."""
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    inner: Any = (
        Recording(httpx.HTTPTransport(verify=trust))
        if mode == "sync"
        else AsyncRecording(httpx.AsyncHTTPTransport(verify=trust))
    )
    # The registry says the instance speaks https; the caller writes http://orders/.
    lb = lbclient.LoadBalancer({"orders": [f"https://{tls_backend.address}"]})
    options = {"tls_server_name": tls_server_name}
    response = send(mode, lb, "GET", "http://orders/secure", options=options, inner=inner)
    assert response.status_code == 200
    assert response.json()["path"] == "/secure"
    (request,) = inner.requests
    assert request.url == f"https://{tls_backend.address}/secure"
    assert request.extensions.get("sni_hostname") == sent
    assert tls_backend.sni_names == [sent]


def test_tls_server_name_that_the_certificate_does_not_cover_fails_verification(
    certificate: tuple[Path, Path], tls_backend: HTTPBackend
) -> None:
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    lb = lbclient.LoadBalancer({"orders": [f"https://{tls_backend.address}"]})
    options = {"tls_server_name": "evil.example", "retry": lbclient.NO_RETRY}
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        send(
            "sync",
            lb,
            "GET",
            "https://orders/",
            options=options,
            inner=httpx.HTTPTransport(verify=trust),
        )
    assert_settled(lb)


def test_unknown_host_raises_service_not_found(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]})
    with pytest.raises(ServiceNotFound, match=r"'payments'.*known: orders"):
        send(mode, lb, "GET", "http://payments/")
    with pytest.raises(ServiceNotFound):
        send(mode, lb, "GET", backends[1].url + "/direct")
    assert backends[1].requests == 0


def test_unknown_host_passthrough(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]})
    options = {"unknown_service": "passthrough"}
    response = send(mode, lb, "GET", backends[1].url + "/direct", options=options)
    assert response.json() == {
        "backend": "b",
        "path": "/direct",
        "method": "GET",
        "host": backends[1].address,
        "status": 200,
    }
    response = send(mode, lb, "GET", "http://orders/balanced", options=options)
    assert response.json()["backend"] == "a"


def test_bad_unknown_service_option() -> None:
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]})
    with pytest.raises(ConfigurationError, match="'raise' or 'passthrough'"):
        lbclient.LoadBalancedTransport(lb, unknown_service="ignore")  # type: ignore[arg-type]


def test_hash_key_sources_reach_the_pick_context(backends: list[HTTPBackend]) -> None:
    keys: list[object] = []

    class KeyRecorder(lbclient.LoadBalancerListener):
        def on_pick(self, service: str, instance: object, context: lbclient.PickContext) -> None:
            keys.append(context.key)

    lb = lbclient.LoadBalancer({"orders": [backends[0].address]}, listeners=[KeyRecorder()])
    send("sync", lb, "GET", "http://orders/", extensions={"lb_key": "user-1"})
    options: dict[str, Any] = {"key": lbclient.key_from_header("X-User")}
    send("sync", lb, "GET", "http://orders/", options=options, headers={"X-User": "user-2"})
    options = {"key": lbclient.key_from_cookie("session")}
    send(
        "sync",
        lb,
        "GET",
        "http://orders/",
        options=options,
        headers={"Cookie": "theme=dark; session=s-3"},
    )
    send("sync", lb, "GET", "http://orders/", options=options)
    assert keys == ["user-1", "user-2", "s-3", None]


@pytest.mark.parametrize(
    "url",
    [
        "http://orders/api/items?q=a%20b&page=2#frag",
        "http://user:secret@orders:8080/",
        "https://orders/caf%C3%A9/%7Euser?x=%2F",
        "http://orders",
    ],
)
@pytest.mark.parametrize(
    ("scheme", "host", "port"),
    [("http", "127.0.0.1", 8001), ("https", "::1", 443), ("http", "Orders-1.Internal", 80)],
)
def test_fast_url_rewrite_matches_copy_with(url: str, scheme: str, host: str, port: int) -> None:
    from lbclient.transport._core import _Origins

    original = httpx.URL(url)
    expected = original.copy_with(scheme=scheme, host=host, port=port)
    origins = _Origins()
    for _ in range(2):  # parsed, then cached
        rewritten = origins.rewrite(original, scheme, host, port)
        assert rewritten == expected
        assert str(rewritten) == str(expected)
        assert (rewritten.host, rewritten.port, rewritten.raw_path) == (
            expected.host,
            expected.port,
            expected.raw_path,
        )
    assert original == httpx.URL(url)  # the caller's URL is untouched


def test_no_instance_through_the_transport(mode: Mode) -> None:
    lb = lbclient.LoadBalancer({"orders": []})
    with pytest.raises(lbclient.NoAvailableInstance, match=r"'orders'.*lists no instance"):
        send(mode, lb, "GET", "http://orders/")
    lb.close()
    with pytest.raises(lbclient.NoAvailableInstance, match="closed"):
        send(mode, lb, "GET", "http://orders/")
