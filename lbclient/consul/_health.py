"""The no-I/O core of Consul discovery: what to ask, how to read the answer, what it means.

Shared by the blocking and the asyncio drivers in ``_registry``; neither repeats any of it.

Reading rules (reference/consul.md):

- an instance's address is ``Service.Address``, or ``Node.Address`` when that is empty;
- its health is the worst of ALL its checks (the node's ``serfHealth`` included): critical
  instances are dropped; warning instances are kept at ``Weights.Warning`` unless
  ``passing_only`` (then Consul is asked with ``?passing`` and drops them itself);
  a weight of 0 drops the instance too (Consul's DNS does the same);
- zone: ``Service.Meta[zone_key]``, else ``Node.Meta[zone_key]``;
- blocking index: reset when it goes backwards, never below 1.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Mapping
from typing import Any

from consul.exceptions import ACLDisabled, ACLPermissionDenied, BadRequest, ConsulException

from lbclient._address import show
from lbclient._answer import AnswerReader, Instances, share
from lbclient._exceptions import (
    ConfigurationError,
    LBError,
    RegistryAccessDenied,
    RegistryUnavailable,
)
from lbclient._instance import ServiceInstance
from lbclient.consul._duration import format_go_duration

log = logging.getLogger("lbclient.consul")

_RANK = {"passing": 0, "warning": 1, "critical": 2}
_STATUSES = tuple(_RANK)  # by rank: the health in metadata is one of these three objects


@dataclasses.dataclass(frozen=True)
class HealthQuery:
    """What the registry asks ``/v1/health/service/<name>`` for, and how it reads the answer."""

    tags: tuple[str, ...] = ()
    dc: str | None = None
    filter: str | None = None
    node_meta: Mapping[str, str] = dataclasses.field(default_factory=dict)
    passing_only: bool = False
    zone_key: str = "zone"
    priority_key: str = "priority"
    wait: float = 55.0
    instance_scheme: str | None = None

    def kwargs(self, index: int | None, rng: random.Random) -> dict[str, Any]:
        """Keyword arguments for py-consul's ``health.service`` (blocking when ``index``)."""
        kwargs: dict[str, Any] = {"passing": self.passing_only}
        if self.tags:
            kwargs["tag"] = list(self.tags)
        if self.dc:
            kwargs["dc"] = self.dc
        if self.filter:
            kwargs["filter_expr"] = self.filter
        if self.node_meta:
            kwargs["node_meta"] = dict(self.node_meta)
        if index:
            kwargs["index"] = str(index)
            # spread the wake-ups of many clients (Consul adds its own stagger on top)
            kwargs["wait"] = format_go_duration(round(self.wait * rng.uniform(0.9, 1.0), 3))
        return kwargs

    def block_seconds(self) -> float:
        """The longest a blocking query may legitimately stay silent (wait + wait/16)."""
        return self.wait * 17 / 16

    def read(
        self, service: str, answer: Any, cursor: int | None
    ) -> tuple[Instances | None, int | None]:
        """Turn ``(index, entries)`` into ``(instances or None if unchanged, next cursor)``."""
        if not isinstance(answer, tuple) or len(answer) != 2:
            raise _malformed(service, f"expected (index, entries), got {type(answer).__name__}")
        raw_index, entries = answer
        try:
            index = int(raw_index)
        except (TypeError, ValueError):
            raise _malformed(service, f"X-Consul-Index {raw_index!r} is not a number") from None
        if cursor is not None and index == cursor:
            return None, cursor  # the wait ran out: nothing changed
        instances = self.instances(service, entries)
        if cursor is not None and index < cursor:
            log.info(
                "%s: Consul index went backwards (%d < %d), re-reading", service, index, cursor
            )
            return instances, None
        return instances, max(index, 1)

    def instances(self, service: str, entries: Any) -> Instances:
        """Parse every entry; a malformed entry is skipped (and counted), the others apply.

        Only an answer malformed as a whole (not a JSON array, or no entry valid) is
        rejected, and the last good list is kept.
        """
        if not isinstance(entries, list):
            raise _malformed(service, f"expected a JSON array, got {type(entries).__name__}")
        reader = AnswerReader(service, "Consul")
        parsed: list[ServiceInstance] = []
        strings: dict[str, str] = {}  # one object per value repeated in this answer
        for position, entry in enumerate(entries):
            label = _label(entry, position)
            instance = reader.attempt(label, self._instance, service, entry, strings)
            if instance is not None:
                parsed.append(instance)
        ids = [i.id for i in parsed]
        if len(set(ids)) != len(ids):  # the same service ID on two nodes
            parsed = [
                dataclasses.replace(i, id=f"{i.id}@{i.metadata['consul.node']}") for i in parsed
            ]
        return reader.result(parsed)

    def _instance(
        self, service: str, entry: Any, strings: dict[str, str]
    ) -> ServiceInstance | None:
        """One entry of the answer, None when Consul says not to use it; raises when the
        entry is malformed (a field missing or of the wrong JSON type). Values the instances
        of an answer repeat (Service.Meta, an address) are kept once, in ``strings``."""
        entry = _object(entry, "the entry")
        svc, node = _object(entry["Service"], "Service"), _object(entry["Node"], "Node")
        checks = entry.get("Checks") or []
        if not isinstance(checks, list):
            raise TypeError(f"Checks {show(checks)} is not an array")
        health = "passing"
        for check in checks:
            rank = _RANK.get(_object(check, "a check")["Status"], 2)
            if rank > _RANK[health]:
                health = _STATUSES[rank]
        if health == "critical" or (self.passing_only and health != "passing"):
            return None
        port = svc["Port"]
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"Service.Port {show(port)} is not an integer")
        if port == 0:
            raise ConfigurationError("it has no port in Consul (Service.Port 0)", service=service)
        weights = _object(svc.get("Weights") or {}, "Service.Weights")
        weight = weights.get("Warning" if health == "warning" else "Passing", 1)
        if weight == 0 and not isinstance(weight, bool):
            return None  # Consul's own rule: weight 0 takes no traffic
        service_meta = _strings(svc.get("Meta"), "Service.Meta", strings)
        node_meta = _strings(node.get("Meta"), "Node.Meta")
        node_name, service_id = _string(node["Node"], "Node.Node"), _string(svc["ID"], "ID")
        address = svc.get("Address") or share(_string(node["Address"], "Node.Address"))
        if isinstance(address, str):  # instances on one host (many ports): one string
            address = strings.setdefault(address, address)
        zone = service_meta.get(self.zone_key) or node_meta.get(self.zone_key) or None
        zone = zone and share(zone)
        priority = _priority(service_meta.get(self.priority_key), self.priority_key)
        metadata = dict(service_meta)
        metadata.update(
            {
                "consul.node": share(node_name),
                "consul.service_id": service_id,
                "consul.health": health,
                # the last word of each service check: a passing TTL check is a heartbeat
                "consul.checks": ";".join(
                    f"{c['CheckID']}={c['Status']}" for c in checks if c.get("ServiceID")
                ),
            }
        )
        return ServiceInstance(
            service,
            address,
            port,
            id=service_id,
            weight=weight,
            zone=zone,
            tags=_tags(svc.get("Tags")),
            metadata=metadata,
            scheme=service_meta.get("scheme") or self.instance_scheme,
            priority=priority,
        )


def _priority(value: str | None, key: str) -> int:
    """``Service.Meta[priority_key]`` as a failover level (absent: 0, the highest)."""
    if value is None:
        return 0
    if not value.isdigit():
        raise TypeError(f"Service.Meta.{key} {show(value)} is not an integer from 0 to 127")
    return int(value)


def _label(entry: Any, position: int) -> str:
    """How a skipped entry is named in logs: its service ID, else its position."""
    try:
        service_id = entry["Service"]["ID"]
    except (KeyError, TypeError, IndexError):
        service_id = None
    return service_id if isinstance(service_id, str) else f"#{position}"


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} {show(value)} is not a JSON object")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} {show(value)} is not a string")
    return value


def _tags(value: Any) -> frozenset[str]:
    """Service.Tags, a JSON array of strings (``"abc"`` is not the tags a, b and c)."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise TypeError(f"Service.Tags {show(value)} is not an array of strings")
    return frozenset(value)


def _strings(value: Any, what: str, shared: dict[str, str] | None = None) -> dict[str, str]:
    """A ``map[string]string`` of Consul (Meta): absent is empty, anything else an error.
    With ``shared``, a value already in it is taken from it (one object per value)."""
    if value is None:
        return {}
    mapping = _object(value, what)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise TypeError(f"{what} {show(value)} is not a map of strings to strings")
    if shared is None:
        return dict(mapping)
    return {k: shared.setdefault(v, v) for k, v in mapping.items()}


def _malformed(service: str, detail: str) -> RegistryUnavailable:
    return RegistryUnavailable(
        f"Consul sent a malformed answer for service {service!r} ({detail}); keeping the last "
        "good list. Check that the address points at a Consul agent",
        service=service,
    )


def translate(
    exc: BaseException, service: str | None, where: str, permission: str = "service:read"
) -> LBError:
    """Turn a py-consul, requests or aiohttp error into ours. Tokens are never in messages."""
    if isinstance(exc, LBError):
        return exc
    what = f"service {service!r}" if service else "the request"
    body = str(exc)
    if isinstance(exc, (ACLPermissionDenied, ACLDisabled)):
        need = f"'{permission}' on {service!r}" if service else "the needed permission"
        return RegistryAccessDenied(
            f"Consul at {where} refused {what} ({body or 'permission denied'}): the ACL token is "
            f"missing, unknown or lacks {need}; pass token=... or set CONSUL_HTTP_TOKEN",
            service=service,
        )
    if isinstance(exc, BadRequest):
        return ConfigurationError(
            f"Consul at {where} rejected the query for {what}: {body}; check tags, filter "
            "and node_meta",
            service=service,
        )
    if "No path to datacenter" in body:
        return ConfigurationError(
            f"Consul at {where} does not know the datacenter asked for {what}; check dc=",
            service=service,
        )
    if isinstance(exc, ConsulException) and ("decode JSON" in body or "Missing index" in body):
        return _malformed(service or "?", body[:200])
    return RegistryUnavailable(
        f"Consul at {where} is unavailable for {what}: {type(exc).__name__}: {body[:300]}; "
        "check that the agent is running and reachable",
        service=service,
    )
