"""EtcdRegistry: instances as keys under a prefix, read once, then watched from that revision."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from urllib.parse import SplitResult, parse_qsl, unquote

from lbclient import ConfigurationError, Registry, ServiceInstance, ServiceNotFound
from lbclient import _validate as check
from lbclient.registry import SnapshotSink, Subscription, WatchPolicy, async_watch
from lbclient_etcd._http import Endpoints, EtcdHTTP
from lbclient_etcd._protocol import (
    Json,
    Snapshot,
    range_request,
    service_prefix,
    watch_request,
    watch_step,
)

DEFAULT_PREFIX = "/services"
DEFAULT_PORT = 2379

Result = tuple[Sequence[ServiceInstance] | None, Snapshot | None]


class EtcdRegistry(Registry):
    """Discover instances registered in etcd v3 under ``<prefix>/<service>/<id>``.

    Each key holds a JSON instance (``{"host", "port", "weight", "zone", "tags",
    "metadata"}``), usually attached to a lease kept alive by EtcdRegistrar, so a dead
    process's instance disappears when its lease expires. A watch follows changes from the
    revision of the first read, resumes from the last revision it saw when the stream
    breaks, and reads the prefix again when that revision was compacted.

    >>> import lbclient                                            # doctest: +SKIP
    >>> lb = lbclient.LoadBalancer("etcd://127.0.0.1:2379/services")  # doctest: +SKIP
    >>> lb.pick("orders")   # reads /services/orders/*             # doctest: +SKIP

    ``endpoints``: one client URL or several (tried in turn). ``timeout``: seconds for a
    connection or a unary call. ``watch_timeout``: a watch with no news for this long is
    reopened (from the same revision), which also detects silently dead connections.
    ``min_backoff``/``max_backoff``: the jittered wait after failures.
    """

    scheme = "etcd"

    def __init__(
        self,
        endpoints: str | Sequence[str] = "http://127.0.0.1:2379",
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        watch_timeout: float = 60.0,
        verify: ssl.SSLContext | str | bool = True,
        min_backoff: float = 0.1,
        max_backoff: float = 30.0,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        endpoints = check.strings("endpoints", endpoints, example="['http://127.0.0.1:2379']")
        timeout = check.seconds("timeout", timeout)
        self.watch_timeout = check.seconds("watch_timeout", watch_timeout)
        self.min_backoff = check.seconds("min_backoff", min_backoff)
        self.max_backoff = check.seconds("max_backoff", max_backoff, minimum=self.min_backoff)
        if not check.text("prefix", prefix).startswith("/"):
            raise ConfigurationError(f"etcd prefix {prefix!r} must start with '/'")
        if not isinstance(verify, (ssl.SSLContext, str, bool)):
            raise check.invalid("verify", verify, "True, False, a CA bundle path or an SSLContext")
        self.prefix = prefix.rstrip("/") or ""
        self.http = EtcdHTTP(Endpoints(endpoints), timeout=timeout, verify=verify)

    def __repr__(self) -> str:
        return f"EtcdRegistry({','.join(self.http.endpoints.urls)!r}, prefix={self.prefix!r})"

    def key_prefix(self, service: str) -> bytes:
        """The keys of ``service``: ``b"/services/orders/"``."""
        return service_prefix(self.prefix, service)

    # -- one-shot reads ---------------------------------------------------------------------

    def resolve(self, service: str) -> Sequence[ServiceInstance]:
        return self._found(self._read(service))

    async def aresolve(self, service: str) -> Sequence[ServiceInstance]:
        return self._found(await self._aread(service))

    def _read(self, service: str) -> Snapshot:
        prefix = self.key_prefix(service)
        answer = self.http.call("/v3/kv/range", range_request(prefix), f"read of {service!r}")
        return Snapshot.from_range(service, prefix, answer)

    async def _aread(self, service: str) -> Snapshot:
        prefix = self.key_prefix(service)
        answer = await self.http.acall(
            "/v3/kv/range", range_request(prefix), f"read of {service!r}"
        )
        return Snapshot.from_range(service, prefix, answer)

    def _found(self, snapshot: Snapshot) -> Sequence[ServiceInstance]:
        if not snapshot.instances and not snapshot.skipped:
            raise ServiceNotFound(
                f"no instance of {snapshot.service!r} is registered in etcd under "
                f"{snapshot.prefix.decode()!r}; start one with EtcdRegistrar, or check the "
                f"prefix (this registry uses {self.prefix!r})",
                service=snapshot.service,
            )
        return snapshot.usable

    # -- watching ---------------------------------------------------------------------------

    def watch(self, service: str, sink: SnapshotSink) -> Subscription:
        # min_interval keeps a stream that keeps breaking at once from spinning.
        policy: WatchPolicy[Snapshot] = WatchPolicy(
            f"etcd:{service}",
            sink,
            min_backoff=self.min_backoff,
            max_backoff=self.max_backoff,
            min_interval=0.05,
        )
        # A task of the caller's loop, or of lbclient's shared watch loop outside asyncio.
        return async_watch(policy, lambda s: self._apoll(service, s))

    async def _apoll(self, service: str, snapshot: Snapshot | None) -> Result:
        if snapshot is None:
            fresh = await self._aread(service)
            return fresh.usable, fresh
        async with self.http.astream(*self._watch_args(snapshot)) as messages:
            async for message in messages:
                step = watch_step(snapshot, message)
                if step.compacted:
                    fresh = await self._aread(service)
                    return fresh.usable, fresh
                snapshot = step.snapshot
                if step.changed:
                    return snapshot.usable, snapshot
        return None, snapshot

    def _watch_args(self, snapshot: Snapshot) -> tuple[str, Json, str, float]:
        body = watch_request(snapshot.prefix, snapshot.revision + 1)
        return "/v3/watch", body, f"watch of {snapshot.service!r}", self.watch_timeout

    def close(self) -> None:
        self.http.close()

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_uri(cls, uri: SplitResult) -> EtcdRegistry:
        """``etcd://host:2379[,host2:2379][/prefix][?tls=1&timeout=5&watch_timeout=60]``.

        The path is the key prefix (default ``/services``); the service name comes from the
        request (``http://orders/`` reads ``/services/orders/*``).
        """
        options = dict(parse_qsl(uri.query))
        unknown = set(options) - {"tls", "timeout", "watch_timeout", "max_backoff"}
        if unknown:
            raise ConfigurationError(
                f"unknown etcd URI option(s) {sorted(unknown)}; valid: max_backoff, timeout, "
                "tls, watch_timeout"
            )
        scheme = "https" if options.get("tls", "").lower() in ("1", "true", "yes") else "http"
        hosts = [h for h in uri.netloc.split(",") if h] or ["127.0.0.1:2379"]
        if any("@" in h for h in hosts):
            raise ConfigurationError(
                "etcd URIs do not take credentials; etcd authentication is not supported yet"
            )
        endpoints = [f"{scheme}://{_with_port(h.strip())}" for h in hosts]
        prefix = unquote(uri.path).rstrip("/") or DEFAULT_PREFIX
        return cls(
            endpoints,
            prefix=prefix,
            timeout=_seconds(options, "timeout", 5.0),
            watch_timeout=_seconds(options, "watch_timeout", 60.0),
            max_backoff=_seconds(options, "max_backoff", 30.0),
        )


def _seconds(options: dict[str, str], name: str, default: float) -> float:
    if name not in options:
        return default
    try:
        return float(options[name])
    except ValueError:
        raise ConfigurationError(
            f"etcd URI option {name}={options[name]!r} is not a number of seconds"
        ) from None


def _with_port(host: str) -> str:
    """``host`` → ``host:2379``; ``host:1234`` and ``[::1]:1234`` stay as they are."""
    after_bracket = host.rpartition("]")[2] if host.startswith("[") else host
    return host if ":" in after_bracket else f"{host}:{DEFAULT_PORT}"
