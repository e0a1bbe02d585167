"""secure_channel: TLS to every instance, and per-call credentials forwarded (sync and aio)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from lbgrpc_support import EchoBackend, self_signed_certificate

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
