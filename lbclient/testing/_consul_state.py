"""The catalog behind ConsulTestServer: one agent node, its services, their checks, the index.

Everything here is protocol-free and guarded by one condition variable: HTTP handlers read and
write through it, blocking queries wait on it, and a clock thread expires TTL checks and reaps
services left critical (DeregisterCriticalServiceAfter). The raft index only grows; every
change records the index at which each service name last changed, which is what a blocking
query on ``/v1/health/service/<name>`` waits for.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lbclient.consul._duration import parse_go_duration

STATUSES = ("passing", "warning", "critical")


class ConsulHTTPError(Exception):
    """An answer other than 200: status code and Consul's own text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass
class Check:
    """One health check of the agent; ``ttl`` is None for checks this server does not run."""

    data: dict[str, Any]
    ttl: float | None = None
    deadline: float | None = None
    deregister_after: float | None = None
    critical_since: float | None = None


@dataclass
class Service:
    data: dict[str, Any]
    checks: list[str] = field(default_factory=list)


class ConsulState:
    """The agent's catalog; test knobs ``reap_interval`` and ``min_deregister`` default to
    Consul's own 30 s reaper period and 1 min floor for DeregisterCriticalServiceAfter."""

    def __init__(
        self,
        *,
        node: str = "test-node",
        address: str = "127.0.0.1",
        datacenter: str = "dc1",
        node_meta: Mapping[str, str] | None = None,
        reap_interval: float = 30.0,
        min_deregister: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cond = threading.Condition()
        self.datacenter = datacenter
        self.reap_interval = reap_interval
        self.min_deregister = min_deregister
        self._clock = clock
        self.node: dict[str, Any] = {
            "ID": str(uuid.uuid4()),
            "Node": node,
            "Address": address,
            "Datacenter": datacenter,
            "TaggedAddresses": {"lan": address, "wan": address},
            "Meta": dict(node_meta or {}),
        }
        self.index = 1
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}
        self.name_index: dict[str, int] = {}
        self.closed = False
        self._next_reap = clock() + reap_interval
        self.checks["serfHealth"] = Check(
            self._check_data("serfHealth", "Serf Health Status", "passing", "", None)
            | {"Output": "Agent alive and reachable"}
        )
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start_clock(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run_clock, name="consul-clock", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    def _run_clock(self) -> None:
        with self.cond:
            while not self.closed:
                now = self._clock()
                self._expire(now)
                if now >= self._next_reap:
                    self._reap(now)
                    self._next_reap = now + self.reap_interval
                deadlines = [c.deadline for c in self.checks.values() if c.deadline is not None]
                wake = min([*deadlines, self._next_reap])
                self.cond.wait(max(0.0, wake - self._clock()))

    # -- the index --------------------------------------------------------------------------

    def _bump(self, *names: str) -> int:
        self.index += 1
        for name in names:
            self.name_index[name] = self.index
        self.cond.notify_all()
        return self.index

    def index_of(self, name: str | None) -> int:
        """The index a query on ``name`` (None: the whole catalog) reports; never 0."""
        if name is None:
            return max(1, self.index)
        return max(1, self.name_index.get(name, self.index))

    def wait_for_change(self, name: str | None, min_index: int, timeout: float) -> bool:
        """Block until the index of ``name`` passes ``min_index`` or ``timeout`` ends.

        Returns False if the server closed meanwhile. Caller holds ``cond``.
        """
        deadline = time.monotonic() + timeout
        while not self.closed and self.index_of(name) <= min_index:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.cond.wait(left)
        return not self.closed

    # -- writes -----------------------------------------------------------------------------

    def register(
        self, service: dict[str, Any], checks: list[dict[str, Any]], replace: bool
    ) -> None:
        """Add or replace a service and its checks (already normalised by the handler)."""
        now = self._clock()
        with self.cond:
            sid = service["ID"]
            name = service["Service"]
            old = self.services.get(sid)
            if old is not None:
                service["CreateIndex"] = old.data["CreateIndex"]
                if old.data["Service"] != name:
                    self.name_index[old.data["Service"]] = self.index + 1
            index = self._bump(name)
            service.setdefault("CreateIndex", index)
            service["ModifyIndex"] = index
            kept = list(old.checks) if old is not None and not replace else []
            if old is not None and replace:
                for cid in old.checks:
                    self.checks.pop(cid, None)
            new_ids = []
            for i, spec in enumerate(checks, start=1):
                cid = spec.get("CheckID") or f"service:{sid}" + (f":{i}" if len(checks) > 1 else "")
                status = spec.get("Status") or "critical"
                if status not in STATUSES:
                    raise ConsulHTTPError(400, f"Invalid check status: {status!r}")
                check = Check(
                    self._check_data(
                        cid, spec.get("Name") or f"Service '{name}' check", status, sid, service
                    )
                    | {"Notes": spec.get("Notes", ""), "Type": spec["Type"]},
                )
                check.data["CreateIndex"] = check.data["ModifyIndex"] = index
                if spec.get("TTL") is not None:
                    check.ttl = spec["TTL"]
                    check.deadline = now + spec["TTL"]
                check.deregister_after = spec.get("DeregisterCriticalServiceAfter")
                check.critical_since = now if status == "critical" else None
                self.checks[cid] = check
                new_ids.append(cid)
            self.services[sid] = Service(
                service, [*(c for c in kept if c not in new_ids), *new_ids]
            )

    def deregister(self, service_id: str) -> None:
        with self.cond:
            service = self.services.pop(service_id, None)
            if service is None:
                raise ConsulHTTPError(
                    404,
                    f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                    "not the service name.",
                )
            for cid in service.checks:
                self.checks.pop(cid, None)
            self._bump(service.data["Service"])

    def update_check(self, check_id: str, status: str, output: str) -> None:
        """The TTL endpoints: set status and output, restart the TTL timer."""
        with self.cond:
            check = self.checks.get(check_id)
            if check is None or check_id == "serfHealth":
                raise ConsulHTTPError(
                    404,
                    f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
                    "not the check name.",
                )
            if check.ttl is None:
                raise ConsulHTTPError(500, f'CheckID "{check_id}" does not have associated TTL')
            check.deadline = self._clock() + check.ttl
            self._set_status(check, status, output, self._clock())
            self.cond.notify_all()  # the clock recomputes its next deadline

    def reset(self) -> None:
        """Knob: forget every service and check and restart the index at 1, as a dev agent
        restarted without its data does (clients then see the index go backwards)."""
        with self.cond:
            for service in self.services.values():
                for cid in service.checks:
                    self.checks.pop(cid, None)
            self.services.clear()
            self.name_index.clear()
            self.index = 1
            self.cond.notify_all()

    def set_node_status(self, status: str) -> None:
        """Knob: the node's serfHealth check (``passing`` by default)."""
        with self.cond:
            self._set_status(self.checks["serfHealth"], status, "", self._clock())

    def _set_status(self, check: Check, status: str, output: str, now: float) -> None:
        """Consul syncs status changes at once but defers output-only changes (5 min
        check_update_interval), so only a status change moves the index."""
        check.data["Output"] = output
        if check.data["Status"] == status:
            return
        check.data["Status"] = status
        check.critical_since = now if status == "critical" else None
        sid = check.data["ServiceID"]
        names = [self.services[sid].data["Service"]] if sid in self.services else []
        if not sid:
            names = [s.data["Service"] for s in self.services.values()]
        check.data["ModifyIndex"] = self._bump(*names)

    def _expire(self, now: float) -> None:
        for check in list(self.checks.values()):
            if check.deadline is not None and now >= check.deadline:
                check.deadline = None
                last = check.data["Output"]
                output = (
                    f"TTL expired (last output before timeout follows): {last}"
                    if last
                    else "TTL expired"
                )
                self._set_status(check, "critical", output, now)

    def _reap(self, now: float) -> None:
        for sid, service in list(self.services.items()):
            for cid in service.checks:
                check = self.checks[cid]
                if check.deregister_after is None or check.critical_since is None:
                    continue
                if now - check.critical_since >= max(check.deregister_after, self.min_deregister):
                    self.deregister(sid)
                    break

    # -- reads ------------------------------------------------------------------------------

    def health_entries(self, name: str) -> list[dict[str, Any]]:
        """``/v1/health/service/<name>`` before filtering, sorted like Consul (node, then ID)."""
        entries = []
        for sid in sorted(self.services):
            service = self.services[sid]
            if service.data["Service"] != name:
                continue
            checks = [self.checks["serfHealth"], *(self.checks[c] for c in service.checks)]
            entries.append(
                {
                    "Node": copy.deepcopy(self.node),
                    "Service": _public(service.data),
                    "Checks": [_public(c.data) for c in checks],
                }
            )
        return entries

    def catalog_services(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {"consul": []}
        for service in self.services.values():
            tags = result.setdefault(service.data["Service"], [])
            tags.extend(t for t in service.data["Tags"] if t not in tags)
        return result

    def catalog_service(self, name: str) -> list[dict[str, Any]]:
        rows = []
        for sid in sorted(self.services):
            s = self.services[sid].data
            if s["Service"] != name:
                continue
            rows.append(
                {
                    "ID": self.node["ID"],
                    "Node": self.node["Node"],
                    "Address": self.node["Address"],
                    "Datacenter": self.datacenter,
                    "TaggedAddresses": dict(self.node["TaggedAddresses"]),
                    "NodeMeta": dict(self.node["Meta"]),
                    "ServiceID": s["ID"],
                    "ServiceName": s["Service"],
                    "ServiceAddress": s["Address"],
                    "ServicePort": s["Port"],
                    "ServiceTags": list(s["Tags"]),
                    "ServiceMeta": dict(s["Meta"]),
                    "ServiceWeights": dict(s["Weights"]),
                    "ServiceTaggedAddresses": dict(s["TaggedAddresses"]),
                    "ServiceEnableTagOverride": s["EnableTagOverride"],
                    "CreateIndex": s["CreateIndex"],
                    "ModifyIndex": s["ModifyIndex"],
                }
            )
        return rows

    def _check_data(
        self, cid: str, name: str, status: str, sid: str, service: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {
            "Node": self.node["Node"],
            "CheckID": cid,
            "Name": name,
            "Status": status,
            "Notes": "",
            "Output": "",
            "ServiceID": sid,
            "ServiceName": service["Service"] if service else "",
            "ServiceTags": list(service["Tags"]) if service else [],
            "Type": "",
            "CreateIndex": self.index,
            "ModifyIndex": self.index,
        }


def _public(data: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(data)


def parse_ttl(value: Any, what: str) -> float:
    """A Go duration from a request body, or a 400 in Consul's words."""
    try:
        return parse_go_duration(str(value))
    except ValueError:
        raise ConsulHTTPError(
            400, f"Request decode failed: invalid duration {what}={value!r}"
        ) from None
