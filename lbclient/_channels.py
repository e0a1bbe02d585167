"""ChannelProviders: the connections a service's calls use, lent to its health probes.

Why: a gRPC health probe that opens its own channel to an instance holds a second HTTP/2
connection next to the one the load-balanced channel's calls use (grpcio shares connections
between channels only when every channel argument matches, which options, compression or
credentials break). Worse, it can see a different network path (other TLS settings). So every
ServiceState keeps this small registry: a sync ``lbclient.grpc.LoadBalancedChannel`` adds
itself when it resolves the service and removes itself on ``close()``, and the gRPC prober
asks it for the instance's sub-channel before falling back to a channel of its own.

The registry holds weak references only: a channel the user drops without closing is not kept
alive by its balancer. The prober is opened inside ``Filter.bind``, which gets no handle on the
registry, so ServiceState binds its filters inside ``binding()`` and the prober picks the
registry up with ``current()``; a prober opened anywhere else simply has none.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from lbclient._instance import ServiceInstance

_binding: contextvars.ContextVar[ChannelProviders | None] = contextvars.ContextVar(
    "lbclient_channel_providers", default=None
)


class ChannelProvider(Protocol):
    """Something that holds one channel per instance of a service and can lend it."""

    @property
    def closed(self) -> bool:
        """True once the provider closed its channels (a lent one may have been cut)."""

    def lend(self, instance: ServiceInstance) -> AbstractContextManager[Any | None]:
        """The channel to ``instance``, kept open until the block ends; ``None`` when the
        provider cannot lend it (closed, or it does not list that instance)."""


class ChannelProviders:
    """The providers of one service, weakly referenced; safe from any thread."""

    def __init__(self) -> None:
        self._refs: tuple[weakref.ref[ChannelProvider], ...] = ()
        self._lock = threading.Lock()

    def providers(self) -> list[ChannelProvider]:
        """The live providers, oldest first (readers never lock: the tuple is swapped)."""
        return [p for ref in self._refs if (p := ref()) is not None]

    def add(self, provider: ChannelProvider) -> None:
        with self._lock:
            alive = [ref for ref in self._refs if ref() is not None]
            if not any(ref() is provider for ref in alive):
                alive.append(weakref.ref(provider))
            self._refs = tuple(alive)

    def discard(self, provider: ChannelProvider) -> None:
        with self._lock:
            self._refs = tuple(
                ref for ref in self._refs if (p := ref()) is not None and p is not provider
            )

    @contextlib.contextmanager
    def binding(self) -> Iterator[None]:
        """Make this registry ``current()`` while a service binds its filters."""
        token = _binding.set(self)
        try:
            yield
        finally:
            _binding.reset(token)

    @staticmethod
    def current() -> ChannelProviders | None:
        """The registry of the service whose filters are being bound, if any."""
        return _binding.get()
