"""ServiceInstance: one reachable copy of a service, and parsing of user-supplied entries."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from lbclient._address import ascii_host, authority, parse_port, show
from lbclient._exceptions import ConfigurationError
from lbclient._metadata import EMPTY, FrozenMetadata, frozen_metadata
from lbclient._share import shared

_NO_TAGS: frozenset[str] = frozenset()
_PORTS: dict[int, int] = {}
_TAGS: dict[frozenset[str], frozenset[str]] = {}
_is_str = str.__instancecheck__


MAX_WEIGHT = 1_000_000.0
"""The largest instance weight (Consul and SRV records stop at 65535)."""
MIN_WEIGHT = 1e-6
"""The smallest instance weight. Every scheduler handles any mix of weights in
``[MIN_WEIGHT, MAX_WEIGHT]`` exactly: sums over thousands of instances stay far from float
overflow, and the ratio of two weights (at most 1e12) stays far from it too, where a
subnormal weight such as 5e-324 made ring sizes divide by zero."""

MAX_PRIORITY = 127
"""The lowest priority level (Envoy's bound); 0 is the highest."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}\Z")


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One instance of a service, as a registry reports it. Immutable and hashable.

    Only what can be dialled is accepted (see ``lbclient._address``): an IP literal or a DNS
    name, a port 1-65535, a weight in ``[MIN_WEIGHT, MAX_WEIGHT]``, tags and metadata of
    strings. Anything else is a ConfigurationError naming the instance, the field, the value
    and what is valid. ``address`` is the one encoded form every dialler uses: the URL
    authority, the Host header, the gRPC target and the health probes' address.

    >>> ServiceInstance("orders", "::1", 8080).address
    '[::1]:8080'
    >>> ServiceInstance("orders", "Bücher.example", 443).address
    'xn--bcher-kva.example:443'
    """

    service: str
    host: str
    port: int
    id: str = ""
    weight: float = 1.0
    zone: str | None = None
    tags: frozenset[str] = frozenset()
    metadata: Mapping[str, str] = dataclasses.field(default_factory=lambda: EMPTY, hash=False)
    scheme: str | None = None
    """``"http"``/``"https"`` (``"grpc"``, ...) when the registry knows it; None: the caller's."""
    priority: int = 0
    """Failover level, 0 the highest (Envoy's priority, an SRV record's): traffic spills to
    higher numbers as lower ones lose health (``ServiceConfig.overprovisioning_factor``)."""
    ascii_host: str = dataclasses.field(init=False, repr=False, compare=False, default="")
    """The host as dialled: an IP literal (IPv6 compressed, without brackets) or the
    IDNA-encoded, lower-cased DNS name. URLs, SNI, probes and gRPC targets use it."""

    def __post_init__(self) -> None:
        if not isinstance(self.service, str) or not self.service:
            raise ConfigurationError(
                f"instance {show(self.id or self.host)}: the service name is empty or not a string "
                f"({show(self.service)}); give the name of the service",
                service=self.service if isinstance(self.service, str) else None,
            )
        if not isinstance(self.id, str):
            self._invalid("id", self.id, "must be a string (or empty: 'host:port')")
        if not isinstance(self.host, str):
            self._invalid("host", self.host, "must be a string: an IP address or a DNS name")
        host = self.host
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            encoded = ascii_host(host)
        except ValueError as exc:
            self._invalid("host", self.host, f"cannot be dialled ({exc}): use an IP or a DNS name")
        object.__setattr__(self, "host", host)
        # Most hosts are already in dialled form: share the one string (100,000 instances)
        object.__setattr__(self, "ascii_host", host if encoded == host else encoded)
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            self._invalid("port", self.port, "must be an integer from 1 to 65535")
        if not 0 < self.port < 65536:
            self._invalid("port", self.port, "is out of range (1-65535)")
        if type(self.port) is int:  # an int subclass stays as given
            # A port above 256 read from JSON is a new int per instance: keep one
            object.__setattr__(self, "port", shared(_PORTS, self.port))
        weight = self.weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not MIN_WEIGHT <= weight <= MAX_WEIGHT  # NaN fails this too
        ):
            self._invalid(
                "weight",
                weight,
                f"must be a number from {MIN_WEIGHT:g} to {MAX_WEIGHT:.0f} (remove the "
                "instance instead of giving it weight 0)",
            )
        object.__setattr__(self, "weight", 1.0 if weight == 1 else float(weight))  # one 1.0
        priority = self.priority
        if (
            isinstance(priority, bool)
            or not isinstance(priority, int)
            or not 0 <= priority <= MAX_PRIORITY
        ):
            self._invalid(
                "priority", priority, f"must be an integer from 0 (highest) to {MAX_PRIORITY}"
            )
        if self.zone is not None and not isinstance(self.zone, str):
            self._invalid("zone", self.zone, "must be a string or None")
        self._check_tags()
        self._check_metadata()
        if self.scheme is not None:
            if not isinstance(self.scheme, str) or (self.scheme and not _SCHEME.match(self.scheme)):
                self._invalid("scheme", self.scheme, "must be a URL scheme such as 'https'")
            if not self.scheme:
                object.__setattr__(self, "scheme", None)
        if not self.id:
            object.__setattr__(self, "id", authority(encoded, self.port))

    def _check_tags(self) -> None:
        tags = self.tags
        if not (isinstance(tags, frozenset) and all(isinstance(t, str) for t in tags)):
            if isinstance(tags, (str, bytes, Mapping)) or not isinstance(tags, Iterable):
                self._invalid("tags", tags, "must be a collection of strings, such as ['v2']")
            tags = frozenset(tags)
            if not all(isinstance(t, str) for t in tags):
                self._invalid("tags", self.tags, "must be a collection of strings, such as ['v2']")
        # a frozenset is 216 bytes even when empty: instances with equal tags share one
        if not tags:
            tags = _NO_TAGS
        elif type(tags) is frozenset:  # a subclass stays as given
            tags = shared(_TAGS, tags)
        object.__setattr__(self, "tags", tags)

    def _check_metadata(self) -> None:
        metadata = self.metadata
        if type(metadata) is FrozenMetadata:  # immutable and checked already
            return
        if not isinstance(metadata, Mapping):
            self._invalid("metadata", metadata, "must be a mapping of strings to strings")
        keys, values = tuple(metadata), tuple(metadata.values())
        if not (all(map(_is_str, keys)) and all(map(_is_str, values))):
            self._invalid("metadata", metadata, "must map strings to strings")
        object.__setattr__(self, "metadata", frozen_metadata(keys, values) if keys else EMPTY)

    def _invalid(self, field: str, value: object, valid: str) -> NoReturn:
        label = self.id if isinstance(self.id, str) and self.id else self.host
        raise ConfigurationError(
            f"instance {show(label)} of service {self.service!r}: {field} {show(value)} {valid}",
            service=self.service,
        )

    @property
    def address(self) -> str:
        """``host:port`` as dialled (``ascii_host``, IPv6 in brackets): a URL's authority,
        the Host header, a gRPC target."""
        return authority(self.ascii_host, self.port)

    def authority(self, port: int | None = None) -> str:
        """``address``, with another port (a health check's) when given."""
        return authority(self.ascii_host, port or self.port)

    @property
    def secure(self) -> bool:
        """True when the registry says this instance speaks TLS."""
        return self.scheme in ("https", "grpcs")


InstanceEntry = str | Mapping[str, Any] | ServiceInstance
"""What a static list accepts: ``"host:port"``, ``"[::1]:8080"``, a dict, or an instance."""

_FIELDS = {f.name for f in dataclasses.fields(ServiceInstance) if f.init}


def parse_instance(service: str, entry: InstanceEntry) -> ServiceInstance:
    """Turn one user-supplied entry into a ServiceInstance, or raise ConfigurationError."""
    if isinstance(entry, ServiceInstance):
        if entry.service != service:
            return dataclasses.replace(entry, service=service)
        return entry
    if isinstance(entry, str):
        scheme = None
        text = entry.strip()
        if "://" in text:
            scheme, _, text = text.partition("://")
        host, port = split_host_port(text, service=service)
        return ServiceInstance(service, host, port, scheme=scheme or None)
    if isinstance(entry, Mapping):
        unknown = set(entry) - _FIELDS - {"address"}
        if unknown:
            raise ConfigurationError(
                f"instance {show(dict(entry))} of service {service!r}: unknown keys "
                f"{show(sorted(map(str, unknown)))}; use {sorted(_FIELDS - {'service'})}",
                service=service,
            )
        fields = dict(entry)
        if "address" in fields:
            address = fields.pop("address")
            if not isinstance(address, str):
                raise ConfigurationError(
                    f"instance {show(dict(entry))} of service {service!r}: address "
                    f"{show(address)} must be a string 'host:port'",
                    service=service,
                )
            fields["host"], fields["port"] = split_host_port(address, service)
        if "host" not in fields or "port" not in fields:
            raise ConfigurationError(
                f"instance {show(dict(entry))} of service {service!r} needs 'host' and 'port' "
                "(or 'address': 'host:port')",
                service=service,
            )
        fields["service"] = service
        if isinstance(fields["port"], str):
            try:
                fields["port"] = parse_port(fields["port"])
            except ValueError as exc:
                raise ConfigurationError(
                    f"instance {show(dict(entry))} of service {service!r}: port "
                    f"{show(fields['port'])}: {exc}",
                    service=service,
                ) from None
        return ServiceInstance(**fields)
    raise ConfigurationError(
        f"instance {show(entry)} of service {service!r}: expected 'host:port', a dict or a "
        f"ServiceInstance, got {type(entry).__name__}",
        service=service,
    )


def split_host_port(text: str, service: str | None = None) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; a bare IPv6 address has no port and is refused.

    The port is ASCII digits only (``"h:٨٠"`` is refused, not read as 80), and the host part
    of an unbracketed address has no ``:`` (``"10.0.0.1:80:90"`` is refused).
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") and sep else ""
    else:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            try:
                ipaddress.IPv6Address(text)
            except ValueError:
                hint = "'host:port' has a single ':'"
            else:
                hint = f"write IPv6 with a port as '[{text}]:PORT'"
            raise ConfigurationError(
                f"address {show(text)} of service {service!r}: {hint}", service=service
            )
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 10:
        raise ConfigurationError(
            f"address {show(text)} of service {service!r}: expected 'host:port' with a port "
            f"of ASCII digits, got {show(port_text)}",
            service=service,
        )
    if not host:
        raise ConfigurationError(
            f"address {show(text)} of service {service!r}: the host is empty", service=service
        )
    return host, int(port_text)  # ServiceInstance checks the range


def parse_instances(service: str, entries: Iterable[InstanceEntry]) -> tuple[ServiceInstance, ...]:
    """Parse a whole list; duplicate instance ids are an error that names both entries."""
    if isinstance(entries, (str, bytes)):
        entries = [e for e in str(entries).replace(",", " ").split() if e]
    seen: dict[str, InstanceEntry] = {}
    result = []
    for entry in entries:
        instance = parse_instance(service, entry)
        if instance.id in seen:
            raise ConfigurationError(
                f"service {service!r}: duplicate instance id {show(instance.id)} "
                f"({show(seen[instance.id])} and {show(entry)}); give each instance a unique 'id'",
                service=service,
            )
        seen[instance.id] = entry
        result.append(instance)
    return tuple(result)
