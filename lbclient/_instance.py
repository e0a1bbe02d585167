"""ServiceInstance: one reachable copy of a service, and parsing of user-supplied entries."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from lbclient._exceptions import ConfigurationError

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One instance of a service, as a registry reports it. Immutable and hashable.

    >>> ServiceInstance("orders", "::1", 8080).address
    '[::1]:8080'
    """

    service: str
    host: str
    port: int
    id: str = ""
    weight: float = 1.0
    zone: str | None = None
    tags: frozenset[str] = frozenset()
    metadata: Mapping[str, str] = dataclasses.field(default_factory=lambda: _EMPTY, hash=False)
    scheme: str | None = None
    """``"http"``/``"https"`` (``"grpc"``, ...) when the registry knows it; None: the caller's."""

    def __post_init__(self) -> None:
        where = f"instance {self.id or self.host!r} of service {self.service!r}"
        if not self.service:
            raise ConfigurationError(f"{where}: the service name is empty", service=self.service)
        host = self.host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host:
            raise ConfigurationError(f"{where}: the host is empty", service=self.service)
        object.__setattr__(self, "host", host)
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigurationError(
                f"{where}: port {self.port!r} is not an integer", service=self.service
            )
        if not 0 < self.port < 65536:
            raise ConfigurationError(
                f"{where}: port {self.port} is out of range (1-65535)", service=self.service
            )
        weight = self.weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or math.isnan(weight)
            or math.isinf(weight)
            or weight <= 0
        ):
            raise ConfigurationError(
                f"{where}: weight {weight!r} must be a finite number above 0 "
                "(remove the instance instead of giving it weight 0)",
                service=self.service,
            )
        object.__setattr__(self, "weight", float(weight))
        if not self.id:
            object.__setattr__(self, "id", f"{_bracket(host)}:{self.port}")
        if not isinstance(self.tags, frozenset):
            object.__setattr__(self, "tags", frozenset(self.tags))
        if not isinstance(self.metadata, MappingProxyType):
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    @property
    def address(self) -> str:
        """``host:port``, with IPv6 hosts in brackets: what goes into a URL's authority."""
        return f"{_bracket(self.host)}:{self.port}"

    @property
    def secure(self) -> bool:
        """True when the registry says this instance speaks TLS."""
        return self.scheme in ("https", "grpcs")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


InstanceEntry = str | Mapping[str, Any] | ServiceInstance
"""What a static list accepts: ``"host:port"``, ``"[::1]:8080"``, a dict, or an instance."""

_FIELDS = {f.name for f in dataclasses.fields(ServiceInstance)}


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
                f"instance {dict(entry)!r} of service {service!r}: unknown keys "
                f"{sorted(unknown)}; use {sorted(_FIELDS - {'service'})}",
                service=service,
            )
        fields = dict(entry)
        if "address" in fields:
            fields["host"], fields["port"] = split_host_port(str(fields.pop("address")), service)
        if "host" not in fields or "port" not in fields:
            raise ConfigurationError(
                f"instance {dict(entry)!r} of service {service!r} needs 'host' and 'port' "
                "(or 'address': 'host:port')",
                service=service,
            )
        fields["service"] = service
        if isinstance(fields.get("port"), str) and fields["port"].isdigit():
            fields["port"] = int(fields["port"])
        return ServiceInstance(**fields)
    raise ConfigurationError(
        f"instance {entry!r} of service {service!r}: expected 'host:port', a dict or a "
        f"ServiceInstance, got {type(entry).__name__}",
        service=service,
    )


def split_host_port(text: str, service: str | None = None) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; a bare IPv6 address has no port and is refused."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep:
            port_text = ""
    else:
        if text.count(":") > 1:
            try:
                ipaddress.IPv6Address(text)
            except ValueError:
                pass
            else:
                raise ConfigurationError(
                    f"address {text!r} of service {service!r}: write IPv6 with a port as "
                    f"'[{text}]:PORT'",
                    service=service,
                )
        host, _, port_text = text.rpartition(":")
    if not port_text.isdigit():
        raise ConfigurationError(
            f"address {text!r} of service {service!r}: expected 'host:port' with a numeric port",
            service=service,
        )
    if not host:
        raise ConfigurationError(
            f"address {text!r} of service {service!r}: the host is empty", service=service
        )
    return host, int(port_text)


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
                f"service {service!r}: duplicate instance id {instance.id!r} "
                f"({seen[instance.id]!r} and {entry!r}); give each instance a unique 'id'",
                service=service,
            )
        seen[instance.id] = entry
        result.append(instance)
    return tuple(result)
