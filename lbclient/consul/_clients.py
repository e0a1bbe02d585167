"""One ``consul.aio`` client per event loop, shared by every watch of a registry on that loop.

A blocking query holds its connection for up to ``wait``, so each watched service needs a
connection of its own; it does not need a session of its own. A thousand watches share one
aiohttp session (one connector without a connection limit, one SSL context) instead of
building a thousand, and cancelling one watch closes only its own connection.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from lbclient.consul._settings import ConsulSettings, close_now

UNLIMITED = 1 << 30
"""The pool's connection limit: every blocking query must get its connection at once."""


class LoopClients:
    """Counted clients by loop: ``acquire`` (on the loop) at a watch's first query,
    ``release`` (on the loop) when it ends; the last one closes the client."""

    def __init__(self, settings: ConsulSettings, timeout: float) -> None:
        self._settings = settings
        self._timeout = timeout
        self._lock = threading.Lock()
        self._clients: dict[asyncio.AbstractEventLoop, tuple[Any, int]] = {}

    def acquire(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            client, users = self._clients.get(loop) or (None, 0)
            if client is None:
                client = self._settings.async_client(self._timeout, connections=UNLIMITED)
            self._clients[loop] = (client, users + 1)
            return client

    async def release(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            client, users = self._clients[loop]
            if users > 1:
                self._clients[loop] = (client, users - 1)
                return
            del self._clients[loop]
        await close_now(client)
