"""InnerTransports: one inner transport (one connection pool) per TLS server name.

Why: httpx pools connections by scheme, host and port. A TLS connection is verified once, in
its handshake, against the server name of the request that opened it (``sni_hostname``, or
the URL's host); every later request to the same address reuses it, whatever name that
request expects. Through one pool, ``tls_server_name="service"`` would let a connection
verified for ``orders`` carry a request for ``payments`` at the same address (a shared
gateway, two services on one host) although ``payments``' certificate was never checked.
So a pool only ever serves one server name:

- ``transport=None``: an ``httpx.HTTPTransport()`` (or async twin) per server name.
- ``transport`` a zero-argument callable (``lambda: httpx.HTTPTransport(verify=ctx)``, or a
  transport class): called once per server name.
- ``transport`` an instance: we cannot copy it, so it carries one server name only. It is
  bound to the first name an https request through it uses, across every lbclient transport
  it is passed to; a request that needs another name through it is refused with a
  ``ConfigurationError`` before anything is sent, saying to pass a callable instead.

Plaintext requests have no server name: they go to the first transport. Nothing here does
I/O; the sync and async transports share it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx

from lbclient import _validate as check
from lbclient._exceptions import ConfigurationError
from lbclient.transport._core import scheme_of

T = TypeVar("T")

_bindings: dict[int, tuple[weakref.ref[Any], str | None]] = {}
"""The server name each inner transport is bound to (None: the URL's host), by ``id``: a
transport need not be hashable; the entry goes when the transport does."""
_bindings_lock = threading.Lock()


def _bind(transport: object, name: str | None) -> str | None:
    """Bind ``transport`` to ``name`` unless it is bound already; return its name.

    A transport that cannot be weakly referenced is bound for as long as the process lives.
    """
    key = id(transport)
    with _bindings_lock:
        entry = _bindings.get(key)
        if entry is not None and entry[0]() is transport:
            return entry[1]
        try:
            ref: weakref.ref[Any] = weakref.ref(transport, lambda _: _bindings.pop(key, None))
        except TypeError:
            ref = _Strong(transport)  # type: ignore[assignment]
        _bindings[key] = (ref, name)
        return name


class _Strong:
    """A strong reference with ``weakref.ref``'s call interface."""

    __slots__ = ("target",)

    def __init__(self, target: object) -> None:
        self.target = target

    def __call__(self) -> object:
        return self.target


def server_name(request: httpx.Request) -> str | None:
    """The name a TLS connection for ``request`` is verified against (None: the URL's host)."""
    name: str | None = request.extensions.get("sni_hostname")
    return name


class InnerTransports(Generic[T]):
    """The inner transports of one load-balanced transport, by TLS server name."""

    def __init__(
        self, transport: T | Callable[[], T] | None, kind: type[T], default: Callable[[], T]
    ) -> None:
        self._make: Callable[[], T] | None
        if transport is None:
            self._make = default
            self.first = default()
        elif isinstance(transport, kind):
            self._make = None
            self.first = transport
        elif callable(transport):
            self._make = transport
            self.first = transport()
            if not isinstance(self.first, kind):
                raise ConfigurationError(
                    f"transport: the callable returned {self.first!r}, not an {kind.__name__}"
                )
        else:
            example = "HTTPTransport" if kind is httpx.BaseTransport else "AsyncHTTPTransport"
            raise check.invalid(
                "transport",
                transport,
                f"an httpx.{kind.__name__} (e.g. httpx.{example}()), a zero-argument callable "
                "that makes one, or None",
            )
        self._by_name: dict[str | None, T] = {}
        self._lock = threading.Lock()

    def for_request(self, request: httpx.Request) -> T:
        """The inner transport whose pool may carry ``request``."""
        if scheme_of(request.url) != "https":
            return self.first
        name = server_name(request)
        transport = self._by_name.get(name)
        if transport is None:
            transport = self._add(name, request)
        return transport

    def _add(self, name: str | None, request: httpx.Request) -> T:
        with self._lock:
            transport = self._by_name.get(name)
            if transport is not None:
                return transport
            bound = _bind(self.first, name)
            if bound == name:
                transport = self.first
            elif self._make is None:
                raise ConfigurationError(
                    "a request whose TLS connection must be verified for "
                    f"{name or request.url.host!r} cannot go through the inner transport "
                    f"{self.first!r}: it holds connections verified for "
                    f"{bound or 'their URL host'!r}, and one connection pool must never serve "
                    "two TLS server names. Pass a "
                    "zero-argument callable instead of an instance (e.g. "
                    "transport=lambda: httpx.HTTPTransport(verify=...)): lbclient then makes "
                    "one inner transport per server name"
                )
            else:
                transport = self._make()
            self._by_name[name] = transport
            return transport

    def all(self) -> list[T]:
        """Every inner transport made or given, once each (to close them)."""
        with self._lock:
            seen = {id(self.first): self.first}
            for transport in self._by_name.values():
                seen.setdefault(id(transport), transport)
            return list(seen.values())
