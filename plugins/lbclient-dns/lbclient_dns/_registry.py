"""DnsSrvRegistry (``dns+srv://``) and DnsRegistry (``dns://``): discovery from plain DNS.

Both re-resolve on the records' TTL, bounded by ``min_ttl`` and ``max_ttl``, and keep the
last good list when DNS fails (NXDOMAIN, SERVFAIL, timeouts): the watch logs the error once,
backs off, and logs again when answers come back.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal, TypedDict, Unpack, cast, get_args
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode

from lbclient import ConfigurationError, Registry, ServiceInstance, ServiceNotFound
from lbclient import _validate as check
from lbclient.registry import (
    Instances,
    SnapshotSink,
    Subscription,
    WatchPolicy,
    async_watch,
)
from lbclient_dns._plan import Family, Plan, Resolution, addresses_plan, clamp_ttl, srv_plan
from lbclient_dns._resolver import Resolvers

log = logging.getLogger("lbclient.dns")

PLACEHOLDER = "{service}"
Cursor = Instances


class DnsOptions(TypedDict, total=False):
    """The keyword settings both DNS registries take (see DnsRegistryBase)."""

    nameservers: Sequence[str] | None
    timeout: float
    min_ttl: float
    max_ttl: float
    family: Family
    scheme: str | None


class DnsRegistryBase(Registry):
    """What both DNS registries share: resolvers, name templates, TTL-paced watching.

    ``name`` is a DNS name with ``{service}`` where the service name goes
    (``_http._tcp.{service}.example``), or a fixed name that serves one service, asked for
    by the name itself, its first label without ``_`` (``_orders._tcp.service.consul``)
    or its first label not starting with ``_`` (``orders`` for
    ``_http._tcp.orders.example``).
    """

    def __init__(
        self,
        name: str,
        *,
        nameservers: Sequence[str] | None = None,
        timeout: float = 2.0,
        min_ttl: float = 1.0,
        max_ttl: float = 60.0,
        family: Family = "any",
        scheme: str | None = None,
    ) -> None:
        if not check.text("name", name).strip(". "):
            raise ConfigurationError(f"{type(self).__name__} needs a DNS name, got {name!r}")
        if nameservers is not None:
            nameservers = check.strings("nameservers", nameservers, example="['10.96.0.10']")
        timeout = check.seconds("timeout", timeout)
        min_ttl = check.seconds("min_ttl", min_ttl)
        max_ttl = check.seconds("max_ttl", max_ttl)
        check.optional(check.text, "scheme", scheme)
        if not 0 < min_ttl <= max_ttl:
            raise ConfigurationError(
                f"DNS min_ttl and max_ttl must satisfy 0 < min_ttl <= max_ttl, got "
                f"{min_ttl} and {max_ttl}"
            )
        if family not in get_args(Family):
            raise ConfigurationError(f"DNS family {family!r} must be one of {get_args(Family)}")
        self.name = name
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.family: Family = family
        self.instance_scheme = scheme
        self.resolvers = Resolvers(nameservers, timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, nameservers={self.resolvers.description!r})"

    def name_for(self, service: str) -> str:
        """The DNS name looked up for ``service``."""
        if PLACEHOLDER in self.name:
            return self.name.replace(PLACEHOLDER, service)
        labels = self.name.split(".")
        label = next((part for part in labels if not part.startswith("_")), "")
        # RFC 2782 names put the service first (_orders._tcp.service.consul), Kubernetes
        # names put the port name first (_http._tcp.orders.ns.svc...): accept either.
        if service in (self.name, self.name.rstrip("."), label, labels[0].lstrip("_")):
            return self.name
        raise ServiceNotFound(
            f"this registry resolves only {self.name} (service {label!r}), not {service!r}; "
            f"write {PLACEHOLDER} in the name to resolve any service, e.g. "
            f"{self.name.replace(label, PLACEHOLDER, 1) if label else PLACEHOLDER}",
            service=service,
        )

    @abstractmethod
    def plan(self, service: str) -> Plan:
        """The queries and rules that resolve ``service``."""

    def resolve(self, service: str) -> Sequence[ServiceInstance]:
        return _sorted(self.resolvers.run(self.plan(service)))

    async def aresolve(self, service: str) -> Sequence[ServiceInstance]:
        return _sorted(await self.resolvers.arun(self.plan(service)))

    def watch(self, service: str, sink: SnapshotSink) -> Subscription:
        policy: WatchPolicy[Cursor] = WatchPolicy(
            f"{self.scheme}:{service}",
            sink,
            min_backoff=min(self.min_ttl, 1.0),
            max_backoff=self.max_ttl,
            min_interval=self.min_ttl,
        )

        def changed(
            resolution: Resolution, previous: Cursor | None
        ) -> tuple[Cursor | None, Cursor]:
            # The next poll waits for the TTL: WatchPolicy.pace() sleeps min_interval.
            policy.min_interval = clamp_ttl(resolution.ttl, self.min_ttl, self.max_ttl)
            current = _sorted(resolution)
            same = previous is not None and (current, current.skipped) == (
                previous,
                previous.skipped,
            )
            return (None if same else current), current

        async def apoll(previous: Cursor | None) -> tuple[Cursor | None, Cursor]:
            return changed(await self.resolvers.arun(self.plan(service)), previous)

        # A task of the caller's loop, or of lbclient's shared watch loop outside asyncio.
        return async_watch(policy, apoll)

    @classmethod
    def _options(cls, uri: SplitResult) -> DnsOptions:
        """The query options every DNS URI accepts, as constructor keywords."""
        options = dict(parse_qsl(uri.query))
        valid = {"nameserver", "timeout", "min_ttl", "max_ttl", "family", "scheme"}
        unknown = set(options) - valid
        if unknown:
            raise ConfigurationError(
                f"unknown {cls.scheme} URI option(s) {sorted(unknown)}; valid: {sorted(valid)}"
            )
        kwargs: DnsOptions = {}
        if "nameserver" in options:
            kwargs["nameservers"] = [n for n in options["nameserver"].split(",") if n]
        for key in ("timeout", "min_ttl", "max_ttl"):
            if key in options:
                try:
                    kwargs[key] = float(options[key])
                except ValueError:
                    raise ConfigurationError(
                        f"{cls.scheme} URI option {key}={options[key]!r} is not a number of seconds"
                    ) from None
        if "family" in options:
            kwargs["family"] = cast(Family, options["family"])  # checked by the constructor
        if "scheme" in options:
            kwargs["scheme"] = options["scheme"]
        return kwargs


def _sorted(resolution: Resolution) -> Cursor:
    # DNS servers rotate answers; order must not look like a change.
    instances = resolution.instances
    skipped = instances.skipped if isinstance(instances, Instances) else ()
    return Instances(sorted(instances, key=lambda i: i.id), skipped)


class DnsSrvRegistry(DnsRegistryBase):
    """Instances from DNS SRV records (RFC 2782), as Consul's DNS interface and Kubernetes
    serve them: ``_http._tcp.orders.example. SRV priority weight port target``.

    >>> import lbclient                                                     # doctest: +SKIP
    >>> lb = lbclient.LoadBalancer("dns+srv://_http._tcp.{service}.example")  # doctest: +SKIP
    >>> lb.pick("orders")    # SRV _http._tcp.orders.example, then A/AAAA     # doctest: +SKIP

    Only the lowest priority that has a target with an address is used (the others are the
    fallback, as RFC 2782 says); each instance's weight is its SRV weight (shared by the
    target's addresses), and ``metadata`` carries ``srv_priority``, ``srv_weight`` and
    ``dns_target``.
    """

    scheme = "dns+srv"

    def __init__(
        self,
        name: str,
        *,
        failover: Literal["dns", "priority"] = "dns",
        **options: Unpack[DnsOptions],
    ) -> None:
        """``failover="dns"`` (RFC 2782): only the lowest priority with a reachable target;
        ``"priority"``: every priority, as ``ServiceInstance.priority`` levels the balancer
        fails over between by health (see the routing guide)."""
        check.check_names(options, DnsOptions.__optional_keys__ | {"failover"})
        if failover not in ("dns", "priority"):
            raise check.invalid("failover", failover, "'dns' or 'priority'")
        super().__init__(name, **options)
        self.failover = failover

    def plan(self, service: str) -> Plan:
        return srv_plan(
            service,
            self.name_for(service),
            self.family,
            self.instance_scheme,
            every_priority=self.failover == "priority",
        )

    @classmethod
    def from_uri(cls, uri: SplitResult) -> DnsSrvRegistry:
        """``dns+srv://_http._tcp.{service}.example?nameserver=10.0.0.2:53&min_ttl=1``
        (also ``failover=priority``)."""
        name = unquote(uri.netloc)
        if not name:
            raise ConfigurationError(
                "dns+srv URI needs a name, e.g. dns+srv://_http._tcp.{service}.example"
            )
        query = parse_qsl(uri.query)
        failover = dict(query).get("failover", "dns")
        rest = uri._replace(query=urlencode([(k, v) for k, v in query if k != "failover"]))
        return cls(name, failover=failover, **cls._options(rest))  # type: ignore[arg-type]


class DnsRegistry(DnsRegistryBase):
    """Instances from A/AAAA records of one name, all on one port: headless Kubernetes
    services (``orders.shop.svc.cluster.local``), or any round-robin DNS name.

    >>> lb = lbclient.LoadBalancer("dns://{service}.shop.svc.cluster.local:8080")  # doctest: +SKIP
    """

    scheme = "dns"

    def __init__(self, name: str, port: int, **options: Unpack[DnsOptions]) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"DNS registry port must be 1-65535, got {port!r}")
        check.check_names(options, DnsOptions.__optional_keys__)
        super().__init__(name, **options)
        self.port = port

    def plan(self, service: str) -> Plan:
        return addresses_plan(
            service, self.name_for(service), self.port, self.family, self.instance_scheme
        )

    @classmethod
    def from_uri(cls, uri: SplitResult) -> DnsRegistry:
        """``dns://{service}.shop.svc.cluster.local:8080?nameserver=10.96.0.10``."""
        name, _, port = unquote(uri.netloc).rpartition(":")
        if not name or not port.isdigit():
            raise ConfigurationError(
                f"dns URI {uri.geturl()!r} needs a name and a port, e.g. "
                "dns://{service}.shop.svc.cluster.local:8080"
            )
        return cls(name, int(port), **cls._options(uri))
