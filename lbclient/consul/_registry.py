"""ConsulRegistry: instances from Consul's health endpoint, watched with blocking queries."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Never
from urllib.parse import SplitResult, parse_qsl

from lbclient import _validate as check
from lbclient._exceptions import ConfigurationError, ServiceNotFound
from lbclient._instance import ServiceInstance
from lbclient._validate import keyword_settings as _settings
from lbclient.consul._clients import LoopClients
from lbclient.consul._duration import to_seconds
from lbclient.consul._health import HealthQuery, translate
from lbclient.consul._settings import DEFAULT_TIMEOUT, Cert, ConsulSettings, close_now
from lbclient.registry._base import Registry, SnapshotSink, Subscription
from lbclient.registry._watch import AsyncPoll, WatchPolicy, async_watch

log = logging.getLogger("lbclient.consul")


class _BucketPolicy(WatchPolicy[int]):
    """WatchPolicy paced by a token bucket (Consul's advice: burst 2), not a fixed interval:
    two changes in a row are both seen at once, a flapping service cannot spin the loop."""

    def __init__(self, name: str, sink: SnapshotSink, rate: float, **kwargs: Any) -> None:
        super().__init__(name, sink, **kwargs)
        self.rate = rate
        self.burst = 2.0
        self._tokens = self.burst
        self._filled = time.monotonic()

    def pace(self) -> float:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._filled) * self.rate)
        self._filled = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class ConsulRegistry(Registry):
    """Instances of a service as Consul's health endpoint lists them, kept fresh in the background.

    >>> lb = lbclient.LoadBalancer(ConsulRegistry("127.0.0.1", 8500, tags=["v2"]))  # doctest: +SKIP
    >>> lb = lbclient.LoadBalancer("consul://127.0.0.1:8500?tag=v2&dc=dc1")         # doctest: +SKIP

    One class serves blocking and asyncio code: ``resolve`` uses py-consul's blocking client,
    ``aresolve`` ``consul.aio``. Every watch is a ``consul.aio`` blocking query in a task: of
    the running loop when started inside one, else of lbclient's one shared watch loop, so
    a blocking program watching hundreds of services runs one watch thread. Only the
    services the balancer asks for are watched, from their first use.

    Options: ``token`` (sent as ``X-Consul-Token``, never logged), ``dc``, ``tags`` (all must
    match), ``filter`` (a bexpr expression), ``node_meta``, ``passing_only`` (default False:
    warning instances stay at their ``Weights.Warning``; critical ones are always dropped),
    ``zone_key`` (metadata key read from the service, then the node), ``priority_key``
    (the service Meta key holding its failover level 0-127, default ``priority``),
    ``scheme``/``verify``/``cert`` (TLS to the agent), ``wait`` (blocking-query wait,
    seconds or ``"55s"``), ``rate`` (at most this many queries per second per service,
    burst 2), ``min_backoff``/``max_backoff`` (after errors), ``instance_scheme``
    (``"https"`` if the instances speak TLS; a ``scheme`` key in the service's Meta wins).
    The ``CONSUL_HTTP_*`` variables fill
    in what is not given.

    A service Consul has never heard of raises ServiceNotFound on first use (checked against
    ``/v1/catalog/services`` when the health answer is empty); a known service with no
    healthy instance resolves to an empty list. A 403 raises RegistryAccessDenied naming the
    missing permission.
    """

    scheme = "consul"

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        token: str | None = None,
        dc: str | None = None,
        tags: Iterable[str] = (),
        filter: str | None = None,
        node_meta: Mapping[str, str] | None = None,
        passing_only: bool = False,
        zone_key: str = "zone",
        priority_key: str = "priority",
        scheme: str | None = None,
        verify: bool | str | None = None,
        cert: Cert = None,
        wait: float | str = 55.0,
        timeout: float = DEFAULT_TIMEOUT,
        rate: float = 10.0,
        min_backoff: float = 0.1,
        max_backoff: float = 30.0,
        instance_scheme: str | None = None,
        environ: Mapping[str, str] | None = None,
        **unknown: Never,
    ) -> None:
        check.check_names(unknown, _settings(type(self)))  # a typo: did-you-mean, not TypeError
        if isinstance(tags, str):
            tags = [tags]  # one tag: unambiguous, unlike a string given for a list of names
        tags = check.strings("tags", tags, example="['v2', 'eu']")
        try:
            wait_seconds = to_seconds(wait, "wait")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if not 0 < wait_seconds <= 600:
            raise ConfigurationError(f"wait must be within (0, 10m] (Consul's cap), got {wait!r}")
        check.number("rate", rate, above=0.0, maximum=1e6)
        check.seconds("min_backoff", min_backoff)
        check.seconds("max_backoff", max_backoff, minimum=min_backoff)
        check.optional(check.text, "filter", filter)
        check.flag("passing_only", passing_only)
        check.text("zone_key", zone_key)
        if instance_scheme not in (None, "http", "https"):
            raise check.invalid("instance_scheme", instance_scheme, "'http', 'https' or None")
        node_meta = check.mapping("node_meta", node_meta or {}, example="{'rack': 'r1'}")
        for key, value in node_meta.items():
            check.text("node_meta key", key)
            check.text(f"node_meta[{key!r}]", value, empty=True)
        self.settings = ConsulSettings.resolve(
            host, port, scheme=scheme, token=token, verify=verify, cert=cert, dc=dc,
            timeout=timeout, environ=environ,
        )  # fmt: skip
        self.query = HealthQuery(
            tags=tags,
            dc=self.settings.dc,
            filter=filter or None,
            node_meta=dict(node_meta or {}),
            passing_only=passing_only,
            zone_key=zone_key,
            priority_key=priority_key,
            wait=wait_seconds,
            instance_scheme=instance_scheme,
        )
        self.rate = rate
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._rng = random.Random()
        self._client: Any = None
        self._lock = threading.Lock()
        self._watches: list[Subscription] = []
        self._clients = LoopClients(
            self.settings, self.settings.timeout + self.query.block_seconds()
        )
        self._resolved: dict[str, int | None] = {}
        """The index of each service's last resolve: its watch starts blocking from there."""

    def __repr__(self) -> str:
        tags = f", tags={list(self.query.tags)}" if self.query.tags else ""
        return f"ConsulRegistry({self.settings.address}{tags})"

    # -- one-shot reads ---------------------------------------------------------------------

    def resolve(self, service: str) -> Sequence[ServiceInstance]:
        client = self._shared_client()
        try:
            answer = client.health.service(service, **self.query.kwargs(None, self._rng))
            instances, index = self.query.read(service, answer, None)
            if instances or self._known(service, client.catalog.services(dc=self.query.dc)):
                self._resolved[service] = index
                return () if instances is None else instances
        except Exception as exc:
            raise translate(exc, service, self.settings.address) from exc
        raise self._not_found(service)

    async def aresolve(self, service: str) -> Sequence[ServiceInstance]:
        client = self.settings.async_client()
        try:
            answer = await client.health.service(service, **self.query.kwargs(None, self._rng))
            instances, index = self.query.read(service, answer, None)
            if instances or self._known(service, await client.catalog.services(dc=self.query.dc)):
                self._resolved[service] = index
                return () if instances is None else instances
        except Exception as exc:
            raise translate(exc, service, self.settings.address) from exc
        finally:
            await close_now(client)
        raise self._not_found(service)

    def _known(self, service: str, answer: Any) -> bool:
        if not isinstance(answer, tuple) or not isinstance(answer[1], dict):
            raise translate(
                ValueError(f"malformed catalog answer {str(answer)[:200]!r}"),
                service,
                self.settings.address,
            )
        return service in answer[1]

    def _not_found(self, service: str) -> ServiceNotFound:
        where = f" in datacenter {self.query.dc!r}" if self.query.dc else ""
        return ServiceNotFound(
            f"Consul at {self.settings.address} has no service {service!r}{where}; check the "
            "name, that the service registered, and that the ACL token may read it (Consul "
            "hides what a token cannot read)",
            service=service,
        )

    def _shared_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self.settings.sync_client()
            return self._client

    # -- watching ---------------------------------------------------------------------------

    def watch(self, service: str, sink: SnapshotSink) -> Subscription:
        policy = _BucketPolicy(
            f"consul:{service}",
            sink,
            self.rate,
            min_backoff=self.min_backoff,
            max_backoff=self.max_backoff,
            rng=self._rng,
        )
        policy.cursor = self._resolved.pop(service, None)
        poll, cleanup = self._poll_for(service)
        subscription = async_watch(policy, poll, cleanup=cleanup)
        with self._lock:
            self._watches.append(subscription)
        return subscription

    def _poll_for(self, service: str) -> tuple[AsyncPoll[int], Callable[[], Awaitable[None]]]:
        """The blocking-query poll of ``service`` and what to do when its watch ends. The
        watch is a task of the caller's event loop, or of the shared watch loop for blocking
        callers; either way its queries go through the loop's one shared client."""
        query, where, rng, clients = self.query, self.settings.address, self._rng, self._clients
        held: list[Any] = []

        async def poll(cursor: int | None) -> tuple[Sequence[ServiceInstance] | None, int | None]:
            if not held:
                held.append(clients.acquire())
            try:
                answer = await held[0].health.service(service, **query.kwargs(cursor, rng))
            except Exception as exc:
                raise translate(exc, service, where) from exc
            return query.read(service, answer, cursor)

        async def cleanup() -> None:
            if held:
                held.clear()
                await clients.release()

        return poll, cleanup

    def close(self) -> None:
        with self._lock:
            watches, self._watches = self._watches, []
            client, self._client = self._client, None
        for watch in watches:
            watch.close()
        if client is not None:
            client.http.session.close()

    # -- configuration from a URI -----------------------------------------------------------

    @classmethod
    def from_uri(cls, uri: SplitResult) -> ConsulRegistry:
        """``consul://host:8500?tag=v2&tag=eu&dc=dc1&passing_only=true&zone_key=az``.

        Also ``scheme``, ``verify`` (true/false or a CA path), ``filter``, ``node_meta=k:v``
        (repeatable), ``wait``, ``token_env`` (the variable holding the token; default
        ``CONSUL_HTTP_TOKEN``). A token in the URI is refused: URIs end up in logs.
        """
        options: dict[str, list[str]] = {}
        for key, value in parse_qsl(uri.query, keep_blank_values=True):
            options.setdefault(key, []).append(value)
        if "token" in options or uri.password or uri.username:
            raise ConfigurationError(
                "do not put the Consul token in the URI (URIs end up in logs); set "
                "CONSUL_HTTP_TOKEN, or name another variable with ?token_env=NAME"
            )
        known = {"tag", "dc", "passing_only", "zone_key", "scheme", "verify", "filter",
                 "node_meta", "wait", "token_env", "instance_scheme",
                 "priority_key"}  # fmt: skip
        unknown = set(options) - known
        if unknown:
            raise ConfigurationError(
                f"unknown consul:// option(s) {sorted(unknown)}; valid: {sorted(known)}"
            )

        def one(key: str) -> str | None:
            return options[key][-1] if key in options else None

        verify: bool | str | None = one("verify")
        if isinstance(verify, str) and verify.lower() in ("true", "1", "false", "0"):
            verify = verify.lower() in ("true", "1")
        token = None
        if one("token_env"):
            token = os.environ.get(one("token_env") or "") or None
        try:
            port = uri.port
        except ValueError:
            raise ConfigurationError(f"consul:// URI has a bad port: {uri.netloc!r}") from None
        return cls(
            uri.hostname or None,
            port,
            token=token,
            dc=one("dc"),
            tags=options.get("tag", []),
            filter=one("filter"),
            node_meta=dict(m.partition(":")[::2] for m in options.get("node_meta", [])),
            passing_only=(one("passing_only") or "false").lower() in ("1", "true", "yes"),
            zone_key=one("zone_key") or "zone",
            priority_key=one("priority_key") or "priority",
            scheme=one("scheme"),
            verify=verify,
            wait=one("wait") or 55.0,
            instance_scheme=one("instance_scheme"),
        )
