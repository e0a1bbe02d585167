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
from collections.abc import Mapping, Sequence
from typing import Any

from consul.exceptions import ACLDisabled, ACLPermissionDenied, BadRequest, ConsulException

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


@dataclasses.dataclass(frozen=True)
class HealthQuery:
    """What the registry asks ``/v1/health/service/<name>`` for, and how it reads the answer."""

    tags: tuple[str, ...] = ()
    dc: str | None = None
    filter: str | None = None
    node_meta: Mapping[str, str] = dataclasses.field(default_factory=dict)
    passing_only: bool = False
    zone_key: str = "zone"
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
    ) -> tuple[Sequence[ServiceInstance] | None, int | None]:
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

    def instances(self, service: str, entries: Any) -> tuple[ServiceInstance, ...]:
        """Parse every entry or reject the whole answer (the last good list is kept)."""
        if not isinstance(entries, list):
            raise _malformed(service, f"expected a JSON array, got {type(entries).__name__}")
        parsed = []
        for entry in entries:
            try:
                instance = self._instance(service, entry)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise _malformed(service, f"entry {str(entry)[:200]!r}: {exc!r}") from None
            if instance is not None:
                parsed.append(instance)
        ids = [i.id for i in parsed]
        if len(set(ids)) != len(ids):  # the same service ID on two nodes
            parsed = [
                dataclasses.replace(i, id=f"{i.id}@{i.metadata['consul.node']}") for i in parsed
            ]
        return tuple(parsed)

    def _instance(self, service: str, entry: Mapping[str, Any]) -> ServiceInstance | None:
        svc, node = entry["Service"], entry["Node"]
        checks = entry.get("Checks") or []
        health = "passing"
        for check in checks:
            status = check["Status"]
            if _RANK.get(status, 2) > _RANK[health]:
                health = status if status in _RANK else "critical"
        if health == "critical" or (self.passing_only and health != "passing"):
            return None
        port = svc["Port"]
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"Service.Port {port!r} is not an integer")
        if port == 0:
            log.warning("%s: instance %r has no port in Consul, skipped", service, svc["ID"])
            return None
        weights = svc.get("Weights") or {}
        weight = weights.get("Warning" if health == "warning" else "Passing", 1)
        if not weight:
            return None
        service_meta = dict(svc.get("Meta") or {})
        node_meta = dict(node.get("Meta") or {})
        zone = service_meta.get(self.zone_key) or node_meta.get(self.zone_key) or None
        metadata = {str(k): str(v) for k, v in service_meta.items()}
        metadata.update(
            {
                "consul.node": str(node["Node"]),
                "consul.service_id": str(svc["ID"]),
                "consul.health": health,
                # the last word of each service check: a passing TTL check is a heartbeat
                "consul.checks": ";".join(
                    f"{c['CheckID']}={c['Status']}" for c in checks if c.get("ServiceID")
                ),
            }
        )
        return ServiceInstance(
            service,
            svc.get("Address") or node["Address"],
            port,
            id=str(svc["ID"]),
            weight=weight,
            zone=zone,
            tags=frozenset(svc.get("Tags") or ()),
            metadata=metadata,
            scheme=service_meta.get("scheme") or self.instance_scheme,
        )


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
