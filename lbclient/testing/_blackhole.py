"""BlackHole: an instance that accepts connections and never answers.

The worst instance a client can meet: connecting succeeds (the kernel completes the
handshake from the listen backlog), the request is sent, and then nothing comes back. Only a
timeout ends such a call, so it is what deadline tests and benchmarks need.
"""

from __future__ import annotations

import socket
from typing import Self


class BlackHole:
    """A listening socket on loopback that never accepts, reads or answers.

    >>> with BlackHole() as hole:                                          # doctest: +SKIP
    ...     httpx.get(f"http://{hole.address}/", timeout=0.5)   # ReadTimeout after 0.5 s
    """

    def __init__(self, host: str = "127.0.0.1", backlog: int = 1024) -> None:
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.bind((host, 0))
        self._socket.listen(backlog)
        self.host = host
        self.port: int = self._socket.getsockname()[1]

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
