"""The registry contract: where instances come from.

A registry answers a one-shot ``resolve(service)`` and, for sources that change, watches in
the background and publishes each new full list to a sink. It never sits on the request path:
the balancer resolves once on first use, then only reads what the watch published.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Protocol
from urllib.parse import SplitResult

from lbclient._exceptions import ConfigurationError
from lbclient._instance import ServiceInstance


class SnapshotSink(Protocol):
    """What a watch publishes to (the balancer's per-service state)."""

    def publish(self, instances: Sequence[ServiceInstance]) -> None:
        """A new, complete list of the service's instances (not a delta)."""

    def fail(self, error: BaseException) -> None:
        """The registry could not be read; the sink keeps its last good list."""

    def heartbeat(self, instance_id: str) -> None:
        """The registry saw a sign of life of ``instance_id`` (e.g. a Consul TTL pass)."""


class Subscription(Protocol):
    """A running watch; ``close`` stops it and returns once it no longer publishes."""

    def close(self) -> None: ...


class NoWatch:
    """The subscription of a source that never changes."""

    def close(self) -> None:
        return None


class Registry(ABC):
    """Base of every registry: static, Consul, Kubernetes and the plugins.

    ``resolve`` raises ServiceNotFound for a service the source does not know, and
    RegistryUnavailable when it cannot be reached; an empty list is a valid answer (the
    service exists, nothing runs). ``watch`` may be called from a plain thread or from
    inside a running event loop; it must return at once.
    """

    scheme: ClassVar[str] = ""
    """The URI scheme this registry is registered under (entry-point group lbclient.registries)."""

    @abstractmethod
    def resolve(self, service: str) -> Sequence[ServiceInstance]:
        """Read the service's instances once, blocking."""

    async def aresolve(self, service: str) -> Sequence[ServiceInstance]:
        """Async twin of ``resolve``; the default runs it in a worker thread."""
        return await asyncio.to_thread(self.resolve, service)

    def watch(self, service: str, sink: SnapshotSink) -> Subscription:
        """Start publishing changes of ``service`` to ``sink`` in the background."""
        return NoWatch()

    def close(self) -> None:
        """Release connections; watches are closed by the balancer before this."""
        return None

    @classmethod
    def from_uri(cls, uri: SplitResult) -> Registry:
        """Build the registry from a parsed URI such as ``consul://host:8500?tag=v2``."""
        raise ConfigurationError(f"registry {cls.__name__} cannot be built from a URI")
