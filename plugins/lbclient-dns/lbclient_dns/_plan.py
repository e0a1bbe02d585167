"""What to ask DNS and what the answers mean, without I/O (RFC 2782 for SRV).

A *plan* is a generator: it yields the queries it needs (``Query``), receives each
``Reply``, and returns a ``Resolution``. The sync and async resolvers (``_resolver.py``)
only send the queries, so the rules live once, here, and are tested without a network.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Sequence
from typing import Literal

from lbclient import RegistryUnavailable, ServiceInstance, ServiceNotFound
from lbclient.registry import AnswerReader

log = logging.getLogger("lbclient.dns")

Family = Literal["any", "ipv4", "ipv6"]
Status = Literal["ok", "nxdomain", "noanswer", "unavailable"]


@dataclasses.dataclass(frozen=True)
class Query:
    name: str
    rdtype: Literal["SRV", "A", "AAAA"]


@dataclasses.dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclasses.dataclass(frozen=True)
class Reply:
    """One answer, or why there is none (``unavailable``: SERVFAIL, REFUSED, timeout)."""

    status: Status
    ttl: float = 0.0
    addresses: tuple[str, ...] = ()
    srv: tuple[Srv, ...] = ()
    error: str = ""
    server: str = ""


@dataclasses.dataclass(frozen=True)
class Resolution:
    instances: tuple[ServiceInstance, ...]
    ttl: float
    """The smallest TTL of the records used: when to ask again (before clamping)."""


Plan = Generator[Query, Reply, Resolution]


def _address_queries(name: str, family: Family) -> list[Query]:
    if family == "ipv4":
        return [Query(name, "A")]
    if family == "ipv6":
        return [Query(name, "AAAA")]
    return [Query(name, "A"), Query(name, "AAAA")]


def _unavailable(service: str, query: Query, reply: Reply) -> RegistryUnavailable:
    return RegistryUnavailable(
        f"DNS lookup of {query.name} {query.rdtype} for service {service!r} failed: "
        f"{reply.error}; check the nameserver{' ' + reply.server if reply.server else ''}",
        service=service,
    )


def addresses_plan(
    service: str, name: str, port: int, family: Family, scheme: str | None = None
) -> Plan:
    """Plain A/AAAA mode (headless Kubernetes services): one instance per address."""
    found: list[str] = []
    ttl: float | None = None
    missing = 0
    queries = _address_queries(name, family)
    for query in queries:
        reply = yield query
        if reply.status == "unavailable":
            raise _unavailable(service, query, reply)
        if reply.status == "nxdomain":
            missing += 1
            continue
        found.extend(reply.addresses)
        if reply.status == "ok":
            ttl = reply.ttl if ttl is None else min(ttl, reply.ttl)
    if missing == len(queries):
        raise ServiceNotFound(
            f"DNS name {name} of service {service!r} does not exist (NXDOMAIN); check the "
            "name, or that the service is deployed",
            service=service,
        )
    reader = AnswerReader(service, "DNS")
    instances = []
    for address in dict.fromkeys(found):
        instance = reader.attempt(
            f"{name} {address}",
            ServiceInstance,
            service,
            address,
            port,
            scheme=scheme,
            metadata={"dns_name": name},
        )
        if instance is not None:
            instances.append(instance)
    return Resolution(reader.result(instances), 0.0 if ttl is None else ttl)


def srv_plan(
    service: str,
    name: str,
    family: Family,
    scheme: str | None = None,
    *,
    every_priority: bool = False,
) -> Plan:
    """SRV mode (RFC 2782): the lowest priority with a reachable target, weights kept.

    Targets of a priority group that resolve to no address are skipped; if none of the
    group's targets resolves, the next priority is used. A target's weight is shared by
    its addresses. Weight 0 means "very rarely" (RFC 2782): such targets get a hundredth
    of the smallest non-zero weight of their group, or weight 1 each when all are 0.

    ``every_priority``: the instances of every priority group, each with
    ``ServiceInstance.priority`` the rank of its SRV priority (0 for the lowest value, at
    most 127), so the balancer fails over by health (Envoy's priority levels) rather than
    only when a group's targets have no address.
    """
    query = Query(name, "SRV")
    reply = yield query
    if reply.status == "unavailable":
        raise _unavailable(service, query, reply)
    if reply.status in ("nxdomain", "noanswer"):
        what = "does not exist (NXDOMAIN)" if reply.status == "nxdomain" else "has no SRV records"
        raise ServiceNotFound(
            f"DNS name {name} of service {service!r} {what}; check the name "
            "(_service._proto.domain), or that the service is registered",
            service=service,
        )
    ttl = reply.ttl
    records = [r for r in reply.srv if r.target not in (".", "")]
    if not records:
        return Resolution((), ttl)  # RFC 2782: target "." = decidedly not available here
    addresses: dict[str, tuple[str, ...]] = {}
    reader = AnswerReader(service, "DNS")
    every: list[ServiceInstance] = []
    for rank, priority in enumerate(sorted({r.priority for r in records})):
        group = [r for r in records if r.priority == priority]
        instances: list[ServiceInstance] = []
        weights = _weights([r.weight for r in group])
        for record, weight in zip(group, weights, strict=True):
            if record.target not in addresses:
                found: list[str] = []
                for address_query in _address_queries(record.target, family):
                    answer = yield address_query
                    if answer.status == "unavailable":
                        raise _unavailable(service, address_query, answer)
                    if answer.status == "ok":
                        found.extend(answer.addresses)
                        ttl = min(ttl, answer.ttl)
                addresses[record.target] = tuple(dict.fromkeys(found))
                if not found:
                    log.warning(
                        "SRV target %s of %s (service %r) has no address; skipped",
                        record.target,
                        name,
                        service,
                    )
            targets = addresses[record.target]
            for address in targets:
                instance = reader.attempt(
                    f"SRV {record.target} {address}:{record.port}",
                    ServiceInstance,
                    service,
                    address,
                    record.port,
                    id=f"{record.target.rstrip('.')}/{_bracket(address)}:{record.port}",
                    weight=weight / len(targets),
                    scheme=scheme,
                    priority=min(rank, 127) if every_priority else 0,  # 127: the lowest level
                    metadata={
                        "dns_target": record.target.rstrip("."),
                        "srv_priority": str(record.priority),
                        "srv_weight": str(record.weight),
                    },
                )
                if instance is not None:
                    instances.append(instance)
        if instances and not every_priority:
            return Resolution(reader.result(_unique(instances)), ttl)
        every.extend(instances)
    if every:
        return Resolution(reader.result(_unique(every)), ttl)
    if reader.skipped:
        reader.result(())  # every record was malformed (port 0, ...): a malformed answer
    raise ServiceNotFound(
        f"none of the SRV targets of {name} (service {service!r}) has an address: "
        f"{', '.join(sorted({r.target for r in records}))}; check their A/AAAA records",
        service=service,
    )


def _weights(raw: Sequence[int]) -> list[float]:
    positive = [w for w in raw if w > 0]
    if not positive:
        return [1.0] * len(raw)
    rare = min(positive) / 100
    return [float(w) if w > 0 else rare for w in raw]


def _unique(instances: list[ServiceInstance]) -> tuple[ServiceInstance, ...]:
    seen: dict[str, ServiceInstance] = {}
    for instance in instances:
        seen.setdefault(instance.id, instance)
    return tuple(seen.values())  # keeps the first of a duplicated record


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def clamp_ttl(ttl: float, low: float, high: float) -> float:
    """When to resolve again: the records' TTL, bounded (TTL 0 would mean a busy loop)."""
    return min(max(ttl, low), high)
