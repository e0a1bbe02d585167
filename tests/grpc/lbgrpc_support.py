"""EchoBackend: a real grpcio server on 127.0.0.1 serving lbtest.Echo, with knobs for tests."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from types import SimpleNamespace
from typing import Any

import grpc

import lbclient


class EchoBackend:
    """One Echo server; ``abort_code`` fails every call, ``delay`` (seconds) slows every
    unary call; ``stop``/``start`` keep the port."""

    def __init__(
        self,
        name: str,
        echo: SimpleNamespace,
        port: int = 0,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.name = name
        self.credentials = credentials
        self.echo = echo
        self.port = port
        self.abort_code: grpc.StatusCode | None = None
        self.delay = 0.0
        self.calls = 0
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EchoBackend:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                             options=[("grpc.so_reuseport", 0)])  # fmt: skip
        self.echo.pb2_grpc.add_EchoServicer_to_server(_Servicer(self), server)
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.credentials)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(None).wait(5)

    def count(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls += 1
        context.add_callback(self._on_done(context))

    def _on_done(self, context: grpc.ServicerContext) -> Any:
        def done() -> None:
            if context.code() is None and not context.is_active():
                self.cancelled.set()

        return done


class _Servicer:
    def __init__(self, backend: EchoBackend) -> None:
        self.backend = backend
        self.pb2 = backend.echo.pb2

    def _enter(self, request: Any, context: grpc.ServicerContext, delay: float = 0.0) -> None:
        backend = self.backend
        backend.count(context)
        _sleep(context, delay)  # before an abort too: a slow failure
        if backend.abort_code is not None:
            context.abort(backend.abort_code, f"{backend.name} answers {backend.abort_code.name}")
        if request is not None and request.abort:
            code = getattr(grpc.StatusCode, request.abort)
            context.abort(code, f"{backend.name} was asked for {request.abort}")

    def _reply(self, context: grpc.ServicerContext, **fields: Any) -> Any:
        metadata = [f"{m.key}={m.value}" for m in context.invocation_metadata()]
        return self.pb2.Reply(backend=self.backend.name, metadata=metadata, **fields)

    def Unary(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter(request, context, self.backend.delay)
        _sleep(context, request.sleep)
        return self._reply(context, text=request.text)

    def ServerStream(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter(request, context)
        for index in range(request.count):
            if index:
                _sleep(context, request.sleep)
            yield self._reply(context, text=request.text, index=index)

    def ClientStream(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        self._enter(None, context)
        texts = [request.text for request in request_iterator]
        return self._reply(context, text="+".join(texts))

    def BidiStream(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        self._enter(None, context)
        for index, request in enumerate(request_iterator):
            _sleep(context, request.sleep)
            yield self._reply(context, text=request.text, index=index)


def _sleep(context: grpc.ServicerContext, seconds: float) -> None:
    end = time.monotonic() + seconds
    while context.is_active() and time.monotonic() < end:
        time.sleep(0.005)


def in_flight(lb: lbclient.LoadBalancer, service: str = "echo") -> int:
    """Sum of in-flight counts over the service's instances (0 when nothing leaked)."""
    return sum(row["in_flight"] for row in lb.stats(service).get("instances", []))


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until true (completion callbacks run on grpcio's threads)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def self_signed_certificate() -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for 127.0.0.1, valid for a day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lbclient-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
