"""LoopbackServer: the start/stop lifecycle the test servers share.

HTTPBackend, KubernetesTestServer and ConsulTestServer are each a ``socketserver`` server on
loopback served by a daemon thread, that tests stop (connections refused) and start again on
the same port. This base owns that part: bind, remember the real port so a restart reuses it,
serve in a named daemon thread, and on stop shut down, close the socket and join the thread.
Each subclass builds its own server (``_make_server``) and adds what it needs around the close
(``_before_close`` / ``_after_close``: dropping open connections, waking held requests).
``stop_child`` is the same for the servers that run in a child process.

``QuietHTTPServer`` and ``ProtocolHandler`` are what every test server shares on the wire: a
client hanging up mid-request or mid-answer is normal use, not something to print a traceback
for; every request body is read before answering, so a refused request never leaves its body
on a kept-alive connection; and any method, known or not, reaches the handler's ``serve``
(the real servers answer 405 with their own error object, never Python's 501 HTML page).

Standard library only: BackendProcess runs ``_http.py`` as a plain script, without lbclient.
"""

from __future__ import annotations

import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

ServerT = TypeVar("ServerT", bound=socketserver.TCPServer)


class LoopbackServer(Generic[ServerT]):
    """A server on ``host:port`` (port 0: a free one, kept across restarts), run in a thread."""

    host: str
    port: int

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: ServerT | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    def _make_server(self) -> ServerT:
        """Bind a new server on ``(self.host, self.port)``."""
        raise NotImplementedError

    def _thread_name(self) -> str:
        """The serving thread's name (called once the port is known)."""
        raise NotImplementedError

    def _before_close(self, server: ServerT) -> None:
        """Called as stopping begins, before the server shuts down."""

    def _after_close(self, server: ServerT) -> None:
        """Called once the server no longer accepts, before its thread is joined."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        """Listen (again, on the same port after ``stop()``); no-op when already running."""
        with self._lifecycle:
            if self._server is not None:
                return self
            server = self._make_server()
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=self._thread_name(),
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: new connections are refused until ``start()``."""
        with self._lifecycle:
            server, self._server = self._server, None
        if server is None:
            return
        self._before_close(server)
        server.shutdown()
        server.server_close()
        self._after_close(server)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_child(process: subprocess.Popen[str]) -> None:
    """Stop a child that serves until its stdin closes: close it, wait, kill if it hangs."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that stays silent when clients go away."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection errors (reset, broken pipe, TLS EOF) are clients leaving: normal use.
        # Anything else is a bug in a test server and keeps its traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class ProtocolHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler whose every method goes to ``serve()``; no access log."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive without the 40 ms Nagle/delayed-ACK stall

    def serve(self) -> None:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler looks up ``do_<METHOD>``; every method, even an unknown one,
        # gets the server's own answer (a 405 in the real server's format).
        if name.startswith("do_"):
            return self.serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def read_body(self) -> bytes:
        """The request body (Content-Length or chunked); read even when it is refused, so
        the next request on a kept-alive connection starts where it should."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # the rest of the stream cannot be framed
            length = 0
        return self.rfile.read(length) if length > 0 else b""
