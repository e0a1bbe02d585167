"""KubernetesRegistry: instances from EndpointSlices, kept current by list + watch."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Never
from urllib.parse import SplitResult, parse_qsl, unquote

from lbclient import _validate as check
from lbclient._exceptions import ConfigurationError, ServiceNotFound, require
from lbclient._instance import ServiceInstance
from lbclient._validate import keyword_settings as _settings
from lbclient.kubernetes._async import AsyncDriver
from lbclient.kubernetes._config import (
    aio_available,
    aio_configuration,
    default_namespace,
    host_of,
    load_configuration,
)
from lbclient.kubernetes._kinds import ENDPOINT_SLICES, ENDPOINTS
from lbclient.kubernetes._listwatch import ListWatch
from lbclient.kubernetes._namespace import FanOut, NamespacePlan
from lbclient.kubernetes._objects import Port, Selection
from lbclient.kubernetes._plan import Plan
from lbclient.kubernetes._sync import SyncDriver
from lbclient.registry._base import Registry, SnapshotSink, Subscription
from lbclient.registry._watch import ThreadWatch, WatchPolicy, async_watch

_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
"""Service names are DNS-1035 labels; anything else (``api.example.com``) is not a Service."""


class KubernetesRegistry(Registry):
    """Instances of the Services of one namespace, read from their EndpointSlices.

    >>> registry = KubernetesRegistry(namespace="shop", port="http")      # doctest: +SKIP
    >>> lb = lbclient.LoadBalancer(registry)                              # doctest: +SKIP
    >>> client = httpx.Client(transport=lbclient.LoadBalancedTransport(lb))  # doctest: +SKIP
    >>> client.get("http://orders/items")  # the host names the Service  # doctest: +SKIP

    ``lb.pick("orders")`` lists the EndpointSlices labelled ``kubernetes.io/service-name=orders``
    in ``namespace``, merges them, then watches from the list's resourceVersion (with
    bookmarks) in the background: a thread for sync users, a task on the running event loop
    (``kubernetes.aio``) when the balancer is first used from asyncio code. With a
    ``kubernetes`` older than 37, which has no ``kubernetes.aio``, asyncio users get the
    thread too (the event loop is never blocked either way).

    - ``port``: the port by name (``"http"``) or by number (the pods' port); None takes the
      only port. ``ports`` overrides it per service.
    - ``services``: restrict the registry to these names (others raise ServiceNotFound); by
      default any Service of the namespace is served. A name that is not a valid Service name
      (``api.example.com``) is always ServiceNotFound, so ``unknown_service="passthrough"``
      works for external hosts.
    - A Service with no EndpointSlice resolves to an empty list, not ServiceNotFound:
      the slices appear a moment after the Service and a service scaled to zero is normal;
      telling the two apart would need ``get`` on Services as well. Picks then raise
      NoAvailableInstance.
    - Ready endpoints only (``ready`` null counts as ready); terminating ones are left out
      unless ``fallback_to_terminating`` and nothing else is ready.
    - ``legacy_endpoints=True`` reads core/v1 Endpoints instead (clusters before 1.21).
    - ``namespace_watch_from`` (default 10): from the 10th watched service on, services
      share one watch of every labelled EndpointSlice of the namespace (fanned out per
      service) instead of opening a watch each; 1 watches the namespace for every service,
      None never does. Fewer connections for many services, more events for few.
    - Configuration: ``configuration`` (a ``kubernetes.client.Configuration``) or
      ``api_client``; otherwise found as ``kubernetes`` does: ``$KUBECONFIG`` or
      ``~/.kube/config`` (``context``, ``config_file``), then the in-cluster service account.
    - RBAC: ``list`` and ``watch`` on ``endpointslices`` (``discovery.k8s.io``) in the namespace
      (``endpoints`` in the core group with ``legacy_endpoints``).
    """

    scheme = "k8s"

    def __init__(
        self,
        namespace: str | None = None,
        *,
        port: Port = None,
        ports: Mapping[str, Port] | None = None,
        services: Iterable[str] | None = None,
        configuration: Any = None,
        api_client: Any = None,
        context: str | None = None,
        config_file: str | None = None,
        fallback_to_terminating: bool = False,
        legacy_endpoints: bool = False,
        watch_timeout: float = 300.0,
        min_backoff: float = 0.1,
        max_backoff: float = 30.0,
        namespace_watch_from: int | None = 10,
        **unknown: Never,
    ) -> None:
        check.check_names(unknown, _settings(type(self)))  # a typo: did-you-mean, not TypeError
        require("kubernetes", "KubernetesRegistry", "kubernetes")
        from kubernetes import client

        if namespace is not None and not _SERVICE_NAME.match(check.text("namespace", namespace)):
            raise check.invalid("namespace", namespace, "a namespace name (a DNS label)")
        self.port = check_port("port", port)
        check.mapping("ports", ports or {}, example="{'orders': 'http', 'search': 8080}")
        self.ports = {
            check.text("ports key", name): check_port(f"ports[{name!r}]", value)
            for name, value in (ports or {}).items()
        }
        self.services = (
            None
            if services is None
            else frozenset(check.strings("services", services, example="['orders', 'search']"))
        )
        self.fallback_to_terminating = check.flag(
            "fallback_to_terminating", fallback_to_terminating
        )
        self.kind = (
            ENDPOINTS if check.flag("legacy_endpoints", legacy_endpoints) else ENDPOINT_SLICES
        )
        self.watch_timeout = check.seconds("watch_timeout", watch_timeout)
        self.min_backoff = check.seconds("min_backoff", min_backoff)
        self.max_backoff = check.seconds("max_backoff", max_backoff, minimum=self.min_backoff)
        check.optional(check.text, "context", context)
        check.optional(check.text, "config_file", config_file)
        self.namespace = namespace or default_namespace()
        self.namespace_watch_from = check.optional(
            check.integer, "namespace_watch_from", namespace_watch_from, minimum=1, maximum=10**6
        )
        self._lock = threading.Lock()
        self._own_watches = 0
        self._fanout: FanOut | None = None
        if api_client is not None:
            self._owns_client = False
            self._api_client = api_client
            configuration = api_client.configuration
        else:
            if configuration is None:
                configuration = load_configuration(context, config_file)
            self._owns_client = True
            self._api_client = client.ApiClient(configuration)
        self.configuration = configuration
        self._primed: dict[str, ListWatch] = {}

    def __repr__(self) -> str:  # host and namespace only: the configuration holds the token
        return (
            f"KubernetesRegistry(namespace={self.namespace!r}, "
            f"host={host_of(self.configuration)!r}, {self.kind.resource})"
        )

    # -- the Registry contract -------------------------------------------------------------

    def resolve(self, service: str) -> Sequence[ServiceInstance]:
        instances, state = SyncDriver(self._plan(service), self._api_client).resolve()
        self._primed[service] = state
        return instances

    async def aresolve(self, service: str) -> Sequence[ServiceInstance]:
        if not aio_available():
            return await asyncio.to_thread(self.resolve, service)
        driver = AsyncDriver(self._plan(service), aio_configuration(self.configuration))
        try:
            instances, state = await driver.resolve()
        finally:
            await driver.aclose()
        self._primed[service] = state
        return instances

    def watch(self, service: str, sink: SnapshotSink) -> Subscription:
        plan = self._plan(service)
        # Resume from the list resolve() just made: no second list, no gap.
        primed = self._primed.pop(service, None)
        if aio_available():
            with self._lock:
                shared = self._shares_watch()
                if shared:
                    return self._join_namespace(plan.selection, sink, primed)
                self._own_watches += 1
        policy: WatchPolicy[ListWatch] = WatchPolicy(
            f"k8s:{self.namespace}/{service}",
            sink,
            min_backoff=self.min_backoff,
            max_backoff=self.max_backoff,
        )
        policy.cursor = primed
        if aio_available():
            driver = AsyncDriver(plan, aio_configuration(self.configuration))
            return async_watch(policy, driver.poll, cleanup=driver.aclose)
        sync = SyncDriver(plan, self._api_client)
        return ThreadWatch(policy, sync.poll, on_close=sync.shutdown)

    def _shares_watch(self) -> bool:
        """True once this many services are watched that one namespace-wide watch is
        cheaper than one more watch per service (``namespace_watch_from``)."""
        threshold = self.namespace_watch_from
        return threshold is not None and self._own_watches + 1 >= threshold

    def _join_namespace(
        self, selection: Selection, sink: SnapshotSink, primed: ListWatch | None
    ) -> Subscription:
        """Subscribe ``sink`` to the namespace-wide watch (started if none runs)."""
        published = primed.published if primed is not None else None
        fanout = self._fanout
        member = fanout.join(selection, sink, published) if fanout is not None else None
        while member is None:
            plan = NamespacePlan(
                self.namespace,
                self.kind,
                Selection(f"(every service of namespace {self.namespace})"),
                host_of(self.configuration),
                self.watch_timeout,
            )
            fanout = self._fanout = FanOut(
                plan,
                AsyncDriver(plan, aio_configuration(self.configuration)),
                {"min_backoff": self.min_backoff, "max_backoff": self.max_backoff},
                self._namespace_closed,
            )
            member = fanout.join(selection, sink, published)
        return member

    def _namespace_closed(self, fanout: FanOut) -> None:
        with self._lock:
            if self._fanout is fanout:
                self._fanout = None

    def close(self) -> None:
        self._primed.clear()
        if self._owns_client:
            self._api_client.close()

    # -- helpers ---------------------------------------------------------------------------

    def _plan(self, service: str) -> Plan:
        if not _SERVICE_NAME.match(service):
            raise ServiceNotFound(
                f"{service!r} is not a Kubernetes Service name (lowercase letters, digits and "
                "'-', at most 63 characters); use the Service's name as the host",
                service=service,
            )
        if self.services is not None and service not in self.services:
            raise ServiceNotFound(
                f"service {service!r} is not one this registry serves "
                f"({', '.join(sorted(self.services))} in namespace {self.namespace!r})",
                service=service,
            )
        selection = Selection(
            service, self.ports.get(service, self.port), self.fallback_to_terminating
        )
        return Plan(
            self.namespace,
            self.kind,
            selection,
            host_of(self.configuration),
            self.watch_timeout,
        )

    @classmethod
    def from_uri(cls, uri: SplitResult) -> KubernetesRegistry:
        """``k8s://shop/orders:http`` (namespace/service:port), ``k8s://shop?port=http``.

        Services named in the path are the only ones served; several may be given
        (``k8s://shop/orders:http,payments:grpc``). Query options: ``port``, ``context``,
        ``config_file``, ``fallback_to_terminating``, ``legacy_endpoints`` (true/false).
        """
        namespace = unquote(uri.hostname or "") or None
        options = dict(parse_qsl(uri.query))
        unknown = set(options) - {
            "port",
            "context",
            "config_file",
            "fallback_to_terminating",
            "legacy_endpoints",
        }
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {sorted(unknown)} in {uri.geturl()!r}; valid: port, "
                "context, config_file, fallback_to_terminating, legacy_endpoints"
            )
        names: list[str] = []
        ports: dict[str, Port] = {}
        for entry in filter(None, unquote(uri.path).strip("/").split(",")):
            name, _, port = entry.strip().partition(":")
            if name in ports or name in names:
                raise ConfigurationError(f"service {name!r} is named twice in {uri.geturl()!r}")
            names.append(name)
            if port:
                ports[name] = check_port(f"k8s:// port of {name!r}", port)
        default_port = options.get("port")
        return cls(
            namespace,
            port=check_port("k8s:// ?port", default_port),
            ports=ports,
            services=names or None,
            context=options.get("context"),
            config_file=options.get("config_file"),
            fallback_to_terminating=_flag(options, "fallback_to_terminating"),
            legacy_endpoints=_flag(options, "legacy_endpoints"),
        )


_PORT_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")
"""A named port (IANA_SVC_NAME): up to 15 lowercase letters, digits and '-', one letter."""


def check_port(setting: str, value: object) -> Port:
    """A port number 1-65535 or a port name; digits in a string (from a URI) are a number."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return check.optional(check.integer, setting, value, minimum=1, maximum=65535)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) > 5 or not 0 < int(value) < 65536:
            raise check.invalid(setting, value, "a port number in [1, 65535] or a port name")
        return int(value)
    if not isinstance(value, str) or not _PORT_NAME.match(value):
        raise check.invalid(
            setting, value, "a port number in [1, 65535] or a port name such as 'http'"
        )
    return value


def _flag(options: Mapping[str, str], name: str) -> bool:
    value = options.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigurationError(f"{name} must be true or false, got {value!r}")
    return value in ("true", "1", "yes")
