"""A requests session whose in-flight requests can be cut from another thread.

A blocking query sits in ``recv`` for up to a minute. Closing a watch must not wait for it
(no thread may outlive ``close()``), and requests offers no way to cancel, so the session
remembers the sockets of its connections and ``abort()`` shuts them down: the blocked read
returns at once with an error, which the stopping watch ignores.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class AbortableSession(requests.Session):
    """``requests.Session`` plus ``abort()``; use one per watch."""

    def __init__(self) -> None:
        super().__init__()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.aborted = False
        adapter = _TrackingAdapter(self)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def opened(self, sock: Any) -> None:
        with self._lock:
            if self.aborted:
                _shut(sock)
            else:
                self._sockets.add(sock)

    def closed(self, sock: Any) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def abort(self) -> None:
        """Fail every request in flight now and every later one; callable from any thread."""
        with self._lock:
            self.aborted = True
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _shut(sock)
        self.close()


def _shut(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _TrackingAdapter(HTTPAdapter):
    def __init__(self, session: AbortableSession) -> None:
        self._session = session  # set before HTTPAdapter.__init__ builds the pool manager
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        session = self._session

        class Plain(HTTPConnection):
            def connect(self) -> None:
                super().connect()
                session.opened(self.sock)

            def close(self) -> None:
                if self.sock is not None:
                    session.closed(self.sock)
                super().close()

        class Secure(HTTPSConnection):
            def connect(self) -> None:
                super().connect()
                session.opened(self.sock)

            def close(self) -> None:
                if self.sock is not None:
                    session.closed(self.sock)
                super().close()

        class PlainPool(HTTPConnectionPool):
            ConnectionCls = Plain

        class SecurePool(HTTPSConnectionPool):
            ConnectionCls = Secure

        self.poolmanager.pool_classes_by_scheme = {"http": PlainPool, "https": SecurePool}
