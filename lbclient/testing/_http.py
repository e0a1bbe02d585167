"""HTTPBackend: a real HTTP/1.1 server on loopback with knobs for tests, demos and benchmarks.

Each backend answers every path with a small JSON body naming itself, and can be slowed,
made to fail, stopped and restarted on the same port. ``/health`` answers ``health_status``.
With ``tls=`` (an ``ssl.SSLContext``) it speaks HTTPS and records the TLS server names (SNI)
clients sent. ``BackendProcess`` runs several backends in a child process, so that a demo or
a benchmark does not share its interpreter lock with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

if __package__:
    from lbclient.testing._server import (
        LoopbackServer,
        ProtocolHandler,
        QuietHTTPServer,
        stop_child,
    )
else:  # BackendProcess runs this file as a script, standard library only: load the sibling.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _server import (  # type: ignore[import-not-found,no-redef]
        LoopbackServer,
        ProtocolHandler,
        QuietHTTPServer,
        stop_child,
    )


class _Server(QuietHTTPServer):
    backend: HTTPBackend

    def server_activate(self) -> None:
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Reset kept-alive connections too, the way a dying process would."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(ProtocolHandler):
    server: _Server

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # Handshake here, in the connection's own thread, not in the accept loop.
            self.request.do_handshake()
        super().setup()

    def serve(self) -> None:
        backend = self.server.backend
        body = self.read_body()
        status = backend.answer(self.command, self.path, dict(self.headers), body)
        delay = backend.pause()
        if delay:
            time.sleep(delay)
        payload = json.dumps(
            {
                "backend": backend.name,
                "path": self.path,
                "method": self.command,
                "host": self.headers.get("Host"),
                "status": status,
            }
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Backend", backend.name)
        for name, value in backend.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class HTTPBackend(LoopbackServer[_Server]):
    """A real HTTP server on ``127.0.0.1`` (random port unless given), run in a thread.

    Knobs, constructor arguments and attributes changeable while it runs: ``delay`` (seconds
    per request), ``fail_rate`` (share of requests answered ``fail_status``), ``status``
    (answer every request with it; None: the normal answers), ``headers`` (extra response
    headers), ``health_status`` (what ``/health`` answers), ``tail_rate`` and ``tail_delay``
    (each request independently takes ``tail_delay`` instead of ``delay`` with probability
    ``tail_rate``: a random slow request, not a slow instance). ``stop()`` closes the socket so
    clients get connection refused; ``start()`` brings it back on the same port.

    >>> with HTTPBackend("a") as backend:                   # doctest: +SKIP
    ...     httpx.get(backend.url + "/x").json()["backend"]
    'a'
    """

    def __init__(
        self,
        name: str = "backend",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.0,
        fail_rate: float = 0.0,
        fail_status: int = 503,
        status: int | None = None,
        health_status: int = 200,
        headers: Mapping[str, str] | None = None,
        seed: int | None = None,
        tls: ssl.SSLContext | None = None,
        tail_rate: float = 0.0,
        tail_delay: float = 0.0,
    ) -> None:
        super().__init__(host, port)
        self.name = name
        self.delay = delay
        self.tail_rate = tail_rate
        self.tail_delay = tail_delay
        self.fail_rate = fail_rate
        self.fail_status = fail_status
        self.status = status
        self.health_status = health_status
        self.requests = 0
        self.paths: list[str] = []
        self.last_headers: dict[str, str] = {}
        self.headers: dict[str, str] = dict(headers or {})
        """Extra headers on every answer (e.g. ``{"Retry-After": "1"}``)."""
        self.tls = tls
        self.sni_names: list[str | None] = []
        """The TLS server name of each handshake (None when the client sent none)."""
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        """Count the request and decide its status (called by the handler)."""
        if path.startswith("/health"):
            return self.health_status
        with self._lock:
            self.requests += 1
            self.paths.append(path)
            self.last_headers = headers
            if self.status is not None:
                return self.status
            if self.fail_rate and self._rng.random() < self.fail_rate:
                return self.fail_status
        return 200

    def pause(self) -> float:
        """How long this answer waits: ``delay``, or ``tail_delay`` for a tail request."""
        if self.tail_rate:
            with self._lock:
                if self._rng.random() < self.tail_rate:
                    return self.tail_delay
        return self.delay

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def _make_server(self) -> _Server:
        server = _Server((self.host, self.port), _Handler)
        server.backend = self
        if self.tls is not None:
            self.tls.sni_callback = self._record_sni
            server.socket = self.tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        return server

    def _thread_name(self) -> str:
        return f"backend-{self.name}"

    def _after_close(self, server: _Server) -> None:
        # Drop open connections too: new and kept-alive requests alike get refused or reset.
        server.drop_connections()

    def _record_sni(self, sock: Any, name: str | None, context: Any) -> None:
        with self._lock:
            self.sni_names.append(name)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for "connection refused" instances)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """How to start one HTTPBackend in a BackendProcess (the knobs HTTPBackend takes)."""

    name: str
    delay: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 503
    status: int | None = None
    health_status: int = 200
    seed: int | None = None
    tail_rate: float = 0.0
    tail_delay: float = 0.0


class BackendProcess:
    """Several HTTPBackends served by a child Python process, on loopback.

    Demos and benchmarks use it so that the servers do not compete with the client for one
    interpreter lock. The child exits when ``stop()`` is called or when this process dies
    (it watches its stdin), so no server outlives its owner.

    >>> with BackendProcess([BackendSpec("a"), BackendSpec("b", delay=0.05)]) as servers:
    ...     servers.addresses                                    # doctest: +SKIP
    {'a': '127.0.0.1:40211', 'b': '127.0.0.1:40213'}
    """

    def __init__(self, specs: list[BackendSpec], *, host: str = "127.0.0.1") -> None:
        self.specs = list(specs)
        self.host = host
        self.addresses: dict[str, str] = {}
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> BackendProcess:
        if self._process is not None:
            return self
        payload = json.dumps(
            {"host": self.host, "specs": [dataclasses.asdict(s) for s in self.specs]}
        )
        process = subprocess.Popen(
            # Run this file as a script: it needs only the standard library, so the child starts
            # fast, without importing lbclient (and -P keeps this directory off its sys.path).
            [sys.executable, "-P", __file__, payload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the backend process exited before it started serving")
        self.addresses = json.loads(line)
        return self

    def stop(self) -> None:
        """Ask the child to stop (close its stdin) and wait for it; kill it if it hangs."""
        process, self._process = self._process, None
        if process is not None:
            stop_child(process)

    def __enter__(self) -> BackendProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve_forever(payload: str) -> None:
    """Child side of BackendProcess: start the backends, print their addresses, wait for EOF."""
    config = json.loads(payload)
    backends = [HTTPBackend(host=config["host"], **spec).start() for spec in config["specs"]]
    print(json.dumps({b.name: b.address for b in backends}), flush=True)
    try:
        sys.stdin.read()
    finally:
        for backend in backends:
            backend.stop()


if __name__ == "__main__":
    _serve_forever(sys.argv[1])
