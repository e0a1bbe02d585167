"""The catalog behind ConsulTestServer: one agent node, its services, their checks, the index.

Everything here is protocol-free and guarded by one condition variable: HTTP handlers read and
write through it, blocking queries wait on it, and a clock thread expires TTL checks and reaps
services left critical (DeregisterCriticalServiceAfter). The raft index only grows; every
change records the index at which each service name last changed, which is what a blocking
query on ``/v1/health/service/<name>`` waits for.
"""

from __future__ import annotations

import copy
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lbclient._duration import parse_go_duration

STATUSES = ("passing", "warning", "critical")


class ConsulHTTPError(Exception):
    """An answer other than 200: status code, Consul's own text, extra headers (``Allow``)."""

    def __init__(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = dict(headers or {})


@dataclass
class Check:
    """One health check of the agent; ``ttl`` is None for checks this server does not run."""

    data: dict[str, Any]
    """The agent's own view (what ``/v1/agent/checks`` would show)."""
    ttl: float | None = None
    deadline: float | None = None
    deregister_after: float | None = None
    critical_since: float | None = None
    catalog_output: str | None = None
    """While an output-only change waits for its deferred sync: the Output the catalog (and
    so ``/v1/health/service``) still shows. None: in sync."""
    sync_at: float | None = None

    def catalog_view(self) -> dict[str, Any]:
        data = copy.deepcopy(self.data)
        if self.catalog_output is not None:
            data["Output"] = self.catalog_output
        return data


@dataclass
class Service:
    data: dict[str, Any]
    checks: list[str] = field(default_factory=list)


class ConsulState:
    """The agent's catalog; test knobs ``reap_interval`` and ``min_deregister`` default to
    Consul's own 30 s reaper period and 1 min floor for DeregisterCriticalServiceAfter, and
    ``check_update_interval`` to its 5 min deferral of output-only check changes."""

    def __init__(
        self,
        *,
        node: str = "test-node",
        address: str = "127.0.0.1",
        datacenter: str = "dc1",
        node_meta: Mapping[str, str] | None = None,
        reap_interval: float = 30.0,
        min_deregister: float = 60.0,
        check_update_interval: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cond = threading.Condition()
        self.datacenter = datacenter
        self.reap_interval = reap_interval
        self.min_deregister = min_deregister
        self.check_update_interval = check_update_interval
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
        self.ids_by_name: dict[str, set[str]] = {}
        """Service name -> the IDs of its instances: a read of one service never scans the
        whole catalog (a test server holding 100,000 instances answers as fast as Consul)."""
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
                self._sync_deferred(now)
                if now >= self._next_reap:
                    self._reap(now)
                    self._next_reap = now + self.reap_interval
                deadlines = [
                    t
                    for c in self.checks.values()
                    for t in (c.deadline, c.sync_at)
                    if t is not None
                ]
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
            if old is not None:
                self._unfile(sid, old.data["Service"])
            self.ids_by_name.setdefault(name, set()).add(sid)

    def service_name(self, service_id: str) -> str:
        """The name of a registered service, or Consul's 404 for an unknown ID."""
        with self.cond:
            service = self.services.get(service_id)
            if service is None:
                raise ConsulHTTPError(
                    404,
                    f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                    "not the service name.",
                )
            return str(service.data["Service"])

    def check_service_name(self, check_id: str) -> str:
        """The service name of an agent check, or Consul's 404 for an unknown check ID."""
        with self.cond:
            check = self.checks.get(check_id)
            if check is None or check_id == "serfHealth":
                raise ConsulHTTPError(
                    404,
                    f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
                    "not the check name.",
                )
            return str(check.data["ServiceName"])

    def deregister(self, service_id: str) -> None:
        with self.cond:
            self.service_name(service_id)
            service = self.services.pop(service_id)
            self._unfile(service_id, service.data["Service"])
            for cid in service.checks:
                self.checks.pop(cid, None)
            self._bump(service.data["Service"])

    def _unfile(self, service_id: str, name: str) -> None:
        ids = self.ids_by_name.get(name)
        if ids is not None:
            ids.discard(service_id)
            if not ids:
                del self.ids_by_name[name]

    def update_check(self, check_id: str, status: str, output: str) -> None:
        """The TTL endpoints: set status and output, restart the TTL timer."""
        with self.cond:
            self.check_service_name(check_id)
            check = self.checks[check_id]
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
            self.ids_by_name.clear()
            self.name_index.clear()
            self.index = 1
            self.cond.notify_all()

    def set_node_status(self, status: str) -> None:
        """Knob: the node's serfHealth check (``passing`` by default)."""
        with self.cond:
            self._set_status(self.checks["serfHealth"], status, "", self._clock())

    def _set_status(self, check: Check, status: str, output: str, now: float) -> None:
        """Consul's local state: a status change syncs to the catalog at once; an output-only
        change is synced after ``check_update_interval`` (half to one and a half of it), so
        the catalog keeps the old Output until then."""
        data = check.data
        if data["Status"] == status and data["Output"] == output:
            return
        if data["Status"] == status and self.check_update_interval > 0:
            if check.sync_at is None:
                check.catalog_output = data["Output"]
                stagger = self.check_update_interval * (0.5 + random.random())
                check.sync_at = now + stagger
                self.cond.notify_all()  # the clock learns the new deadline
            data["Output"] = output
            return
        data["Output"] = output
        data["Status"] = status
        check.catalog_output = check.sync_at = None
        check.critical_since = now if status == "critical" else None
        self._write_check(check)

    def _write_check(self, check: Check) -> None:
        """A catalog write of ``check``: its ModifyIndex and its services' indexes move."""
        sid = check.data["ServiceID"]
        names = [self.services[sid].data["Service"]] if sid in self.services else []
        if not sid:
            names = [s.data["Service"] for s in self.services.values()]
        check.data["ModifyIndex"] = self._bump(*names)

    def _sync_deferred(self, now: float) -> None:
        for check in self.checks.values():
            if check.sync_at is not None and now >= check.sync_at:
                stale = check.catalog_output
                check.catalog_output = check.sync_at = None
                if stale != check.data["Output"]:
                    self._write_check(check)

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
        node_service = Service(_CONSUL_SERVICE)
        ids = sorted(self.ids_by_name.get(name, ()))
        for service in [node_service, *(self.services[sid] for sid in ids)]:
            if service.data["Service"] != name:
                continue
            checks = [self.checks["serfHealth"], *(self.checks[c] for c in service.checks)]
            entries.append(
                {
                    "Node": copy.deepcopy(self.node),
                    "Service": _public(service.data),
                    "Checks": [c.catalog_view() for c in checks],
                }
            )
        return entries

    def catalog_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """``/v1/catalog/service/<name>`` rows (None: every service, the ``consul`` service of
        this server node first, as the catalog holds it)."""
        ids = sorted(self.services if name is None else self.ids_by_name.get(name, ()))
        services = [_CONSUL_SERVICE] + [self.services[sid].data for sid in ids]
        return [self._row(s) for s in services if name in (None, s["Service"])]

    def _row(self, s: dict[str, Any]) -> dict[str, Any]:
        return {
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
            "ServiceKind": s["Kind"],
            "ServiceProxy": copy.deepcopy(s.get("Proxy", _EMPTY_PROXY)),
            **({"ServiceLocality": dict(s["Locality"])} if s.get("Locality") else {}),
            "CreateIndex": s["CreateIndex"],
            "ModifyIndex": s["ModifyIndex"],
        }

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


_CONSUL_SERVICE: dict[str, Any] = {
    "ID": "consul",
    "Service": "consul",
    "Tags": [],
    "Address": "",
    "Port": 8300,
    "Meta": {},
    "Weights": {"Passing": 1, "Warning": 1},
    "TaggedAddresses": {},
    "EnableTagOverride": False,
    "Kind": "",
    "CreateIndex": 1,
    "ModifyIndex": 1,
}
"""The ``consul`` service every server node of a real cluster carries."""


_EMPTY_PROXY: dict[str, Any] = {"Mode": "", "MeshGateway": {}, "Expose": {}}
"""What Consul serves as the Proxy of a service registered without one."""


def _public(data: dict[str, Any]) -> dict[str, Any]:
    """A service as ``/v1/health/service`` shows it (an empty Kind is left out, as in Go)."""
    service = copy.deepcopy(data)
    service.setdefault("Proxy", copy.deepcopy(_EMPTY_PROXY))
    service.setdefault("Connect", {})
    service.setdefault("PeerName", "")
    if not service.get("Kind"):
        service.pop("Kind", None)
    return service


def parse_ttl(value: Any, what: str) -> float:
    """A Go duration from a request body, or a 400 in Consul's words."""
    try:
        return parse_go_duration(str(value))
    except ValueError:
        raise ConsulHTTPError(
            400, f"Request decode failed: invalid duration {what}={value!r}"
        ) from None
