"""HTTPBackend: a real HTTP/1.1 server on loopback with knobs for tests, demos and benchmarks.

Each backend answers every path with a small JSON body naming itself, and can be slowed,
made to fail, stopped and restarted on the same port. ``/health`` answers ``health_status``.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    backend: HTTPBackend


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive without the 40 ms Nagle/delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _serve(self) -> None:
        backend = self.server.backend
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status = backend.answer(self.command, self.path, dict(self.headers), body)
        delay = backend.delay
        if delay:
            time.sleep(delay)
        payload = json.dumps(
            {"backend": backend.name, "path": self.path, "method": self.command,
             "host": self.headers.get("Host"), "status": status}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Backend", backend.name)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve


class HTTPBackend:
    """A real HTTP server on ``127.0.0.1`` (random port unless given), run in a thread.

    Knobs, changeable while it runs: ``delay`` (seconds per request), ``fail_rate`` (share of
    requests answered ``fail_status``), ``status`` (answer every request with it),
    ``health_status`` (what ``/health`` answers). ``stop()`` closes the socket so clients get
    connection refused; ``start()`` brings it back on the same port.

    >>> with HTTPBackend("a") as backend:                   # doctest: +SKIP
    ...     httpx.get(backend.url + "/x").json()["backend"]
    'a'
    """

    def __init__(self, name: str = "backend", *, host: str = "127.0.0.1", port: int = 0,
                 delay: float = 0.0, fail_rate: float = 0.0, fail_status: int = 503,
                 seed: int | None = None) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.delay = delay
        self.fail_rate = fail_rate
        self.fail_status = fail_status
        self.status: int | None = None
        self.health_status = 200
        self.requests = 0
        self.paths: list[str] = []
        self.last_headers: dict[str, str] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

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

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> HTTPBackend:
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.backend = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"backend-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections: new requests get connection refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> HTTPBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for "connection refused" instances)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
