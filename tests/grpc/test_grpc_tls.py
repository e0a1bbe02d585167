"""secure_channel: TLS to every instance, and per-call credentials forwarded (sync and aio)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import pytest
from lbgrpc_support import EchoBackend, self_signed_certificate

import lbclient
import lbclient.grpc
import lbclient.grpc.aio


@pytest.fixture(scope="module")
def certificate() -> tuple[bytes, bytes]:
    return self_signed_certificate()


@pytest.fixture
def tls_backends(echo, certificate) -> Iterator[list[EchoBackend]]:
    cert, key = certificate
    credentials = grpc.ssl_server_credentials([(key, cert)])
    started = [EchoBackend(n, echo, credentials=credentials).start() for n in "ab"]
    yield started
    for backend in started:
        backend.stop()


def _token(context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
    callback((("x-token", "secret-1"),), None)


def test_secure_channel_uses_tls_and_per_call_credentials(echo, tls_backends, make_lb, certificate):
    lb = make_lb(tls_backends)
    credentials = grpc.ssl_channel_credentials(root_certificates=certificate[0])
    with lbclient.grpc.secure_channel("echo", lb, credentials) as channel:
        stub = echo.pb2_grpc.EchoStub(channel)
        call_credentials = grpc.metadata_call_credentials(_token)
        replies = [stub.Unary(echo.pb2.Request(), credentials=call_credentials) for _ in range(4)]
    assert {r.backend for r in replies} == {"a", "b"}
    assert all("x-token=secret-1" in r.metadata for r in replies)


def test_plaintext_to_a_tls_instance_fails_as_unavailable(echo, tls_backends, make_lb):
    lb = make_lb(tls_backends, outlier=None)
    stub = echo.pb2_grpc.EchoStub(lbclient.grpc.insecure_channel("echo", lb))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_aio_secure_channel(echo, tls_backends, make_lb, certificate):
    lb = make_lb(tls_backends)
    credentials = grpc.ssl_channel_credentials(root_certificates=certificate[0])
    async with lbclient.grpc.aio.secure_channel("echo", lb, credentials) as channel:
        stub = echo.pb2_grpc.EchoStub(channel)
        call_credentials = grpc.metadata_call_credentials(_token)
        replies = [
            await stub.Unary(echo.pb2.Request(), credentials=call_credentials) for _ in range(4)
        ]
    assert {r.backend for r in replies} == {"a", "b"}
    assert all("x-token=secret-1" in r.metadata for r in replies)


@pytest.fixture(scope="module")
def orders_certificate(self_signed) -> tuple[bytes, bytes]:
    """Valid for the name ``orders`` only."""
    cert, key = self_signed("orders", "DNS:orders")
    return cert.read_bytes(), key.read_bytes()


@pytest.fixture
def orders_backend(echo, orders_certificate) -> Iterator[EchoBackend]:
    cert, key = orders_certificate
    backend = EchoBackend("o", echo, credentials=grpc.ssl_server_credentials([(key, cert)]))
    yield backend.start()
    backend.stop()


def _named_lb(backend: EchoBackend) -> lbclient.LoadBalancer:
    """``orders`` and ``payments`` at one address (a shared gateway, two services per host)."""
    return lbclient.LoadBalancer(
        {"orders": [backend.address], "payments": [backend.address]}, outlier=None
    )


@pytest.mark.parametrize("first", ["orders", "payments"])
def test_a_sub_channel_verified_for_one_name_never_serves_another(
    echo, orders_backend, orders_certificate, first
):
    """Per-instance sub-channels carry their channel's ``ssl_target_name_override``: grpcio
    shares a connection between channels only when every channel argument matches."""
    lb = _named_lb(orders_backend)
    credentials = grpc.ssl_channel_credentials(root_certificates=orders_certificate[0])
    results = {}
    with contextlib.ExitStack() as open_channels:  # both stay open: a connection to share
        for service in (first, "payments" if first == "orders" else "orders"):
            options = [("grpc.ssl_target_name_override", service)]
            channel = lbclient.grpc.secure_channel(
                service, lb, credentials, options=options, retry=lbclient.NO_RETRY
            )
            open_channels.enter_context(channel)
            stub = echo.pb2_grpc.EchoStub(channel)
            try:
                results[service] = stub.Unary(echo.pb2.Request(), timeout=5).backend
            except grpc.RpcError as exc:
                results[service] = exc.code()
        open_channels.callback(lb.close)
    assert results == {"orders": "o", "payments": grpc.StatusCode.UNAVAILABLE}


async def test_aio_sub_channel_verified_for_one_name_never_serves_another(
    echo, orders_backend, orders_certificate
):
    lb = _named_lb(orders_backend)
    credentials = grpc.ssl_channel_credentials(root_certificates=orders_certificate[0])
    results = {}
    try:
        for service in ("orders", "payments", "orders"):
            options = [("grpc.ssl_target_name_override", service)]
            async with lbclient.grpc.aio.secure_channel(
                service, lb, credentials, options=options, retry=lbclient.NO_RETRY
            ) as channel:
                stub = echo.pb2_grpc.EchoStub(channel)
                try:
                    results[service] = (await stub.Unary(echo.pb2.Request(), timeout=5)).backend
                except grpc.RpcError as exc:
                    results[service] = exc.code()
    finally:
        lb.close()
    assert results == {"orders": "o", "payments": grpc.StatusCode.UNAVAILABLE}
