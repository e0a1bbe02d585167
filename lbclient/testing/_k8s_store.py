"""The state behind KubernetesTestServer: objects, one resourceVersion counter, watch history.

No I/O here. The HTTP handler reads lists and waits for events; the test knobs write. Every
write bumps the global resourceVersion (as etcd's revision does), records one watch event, and
wakes the watchers. ``compact()`` forgets the history so that a watch from an older version
gets the ERROR 410 event, as a real API server does after etcd compaction.

core/v1 Endpoints are not written by tests: like the endpoints controller of a real cluster,
the store mirrors every service's EndpointSlices into one Endpoints object of the same name.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from lbclient.testing._k8s_selector import Selector, selected

SLICES = "endpointslices"
ENDPOINTS = "endpoints"
SERVICE_LABEL = "kubernetes.io/service-name"

KINDS = {
    SLICES: ("EndpointSlice", "discovery.k8s.io/v1"),
    ENDPOINTS: ("Endpoints", "v1"),
}


@dataclasses.dataclass(frozen=True)
class Event:
    resource_version: int
    resource: str
    namespace: str
    type: str  # ADDED, MODIFIED, DELETED
    object: dict[str, Any]
    previous: dict[str, Any] | None = None
    """The object before a MODIFIED event: a watcher whose selector matched only the old
    labels must see DELETED, one that matches only the new labels ADDED (the cacher does)."""

    def as_seen_by(self, labels: Selector, fields: Selector) -> dict[str, Any] | None:
        """The event a watcher with these selectors receives, or None (apiserver's cacher)."""
        now = self.type != "DELETED" and selected(self.object, labels, fields)
        if self.type == "DELETED":
            before = selected(self.object, labels, fields)
        else:
            before = self.previous is not None and selected(self.previous, labels, fields)
        if self.type == "DELETED":
            return {"type": "DELETED", "object": self.object} if before else None
        if now:
            return {"type": "MODIFIED" if before else "ADDED", "object": self.object}
        if before and self.previous is not None:
            gone = copy.deepcopy(self.previous)
            gone["metadata"]["resourceVersion"] = str(self.resource_version)
            return {"type": "DELETED", "object": gone}
        return None


class Store:
    """Objects by (resource, namespace, name), plus the event history since the last compaction."""

    def __init__(self) -> None:
        self.resource_version = 1
        self.compacted = 1
        """Watches from a version below this get ERROR 410 (their history is gone)."""
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: list[Event] = []
        self.generation = 0
        self.open_watches = 0
        """Watch streams being served now (tests wait for one before closing it)."""
        """Bumped by ``close_watches`` (and by a restart): watch streams end when it moves."""
        self.changed = threading.Condition()

    # -- reads ---------------------------------------------------------------------------

    def query(
        self,
        resource: str,
        namespace: str | None,
        labels: Selector = (),
        fields: Selector = (),
    ) -> tuple[int, list[dict[str, Any]]]:
        with self.changed:
            items = [
                copy.deepcopy(obj)
                for (res, ns, _), obj in sorted(self.objects.items())
                if res == resource
                and (namespace is None or ns == namespace)
                and selected(obj, labels, fields)
            ]
            return self.resource_version, items

    def events_after(self, resource: str, namespace: str | None, version: int) -> list[Event]:
        """Events newer than ``version`` (the caller holds ``changed``).

        The history is in version order: a watcher woken by a change looks only at what is
        new (a bisection), not at the whole history, so a thousand open watches stay cheap.
        """
        start = bisect.bisect_right(self.history, version, key=_version_of)
        return [
            e
            for e in self.history[start:]
            if e.resource_version > version
            and e.resource == resource
            and (namespace is None or e.namespace == namespace)
        ]

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.changed:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    # -- writes (every one bumps the version and wakes the watchers) ----------------------

    def put(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.changed:
            name = obj["metadata"]["name"]
            key = (resource, namespace, name)
            kind, api_version = KINDS[resource]
            stored = copy.deepcopy(obj)
            stored.pop("kind", None)
            stored.pop("apiVersion", None)
            stored["metadata"]["namespace"] = namespace
            previous = self.objects.get(key)
            if previous is not None:
                stored["metadata"].setdefault("uid", previous["metadata"].get("uid"))
                if _same(previous, stored):
                    return copy.deepcopy(previous)
            else:
                stored["metadata"].setdefault("uid", f"uid-{resource}-{namespace}-{name}")
            self.resource_version += 1
            stored["metadata"]["resourceVersion"] = str(self.resource_version)
            self.objects[key] = {"kind": kind, "apiVersion": api_version, **stored}
            self._record(resource, namespace, "MODIFIED" if previous else "ADDED", stored, previous)
            if resource == SLICES:
                if previous is not None and _service_of(previous) != _service_of(stored):
                    self._mirror(namespace, _service_of(previous))
                self._mirror(namespace, _service_of(stored))
            self.changed.notify_all()
            return copy.deepcopy(self.objects[key])

    def delete(self, resource: str, namespace: str, name: str) -> bool:
        with self.changed:
            obj = self.objects.pop((resource, namespace, name), None)
            if obj is None:
                return False
            self.resource_version += 1
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = str(self.resource_version)
            self._record(resource, namespace, "DELETED", gone)
            if resource == SLICES:
                self._mirror(namespace, _service_of(obj))
            self.changed.notify_all()
            return True

    def compact(self) -> int:
        """Forget every event so far; return the version older watches must relist from."""
        with self.changed:
            self.history.clear()
            self.compacted = self.resource_version
            return self.compacted

    def close_watches(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def _record(
        self,
        resource: str,
        namespace: str,
        type_: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None = None,
    ) -> None:
        kind, api_version = KINDS[resource]
        body = {"kind": kind, "apiVersion": api_version, **copy.deepcopy(obj)}
        before = copy.deepcopy(previous) if previous is not None else None
        self.history.append(Event(self.resource_version, resource, namespace, type_, body, before))

    def _mirror(self, namespace: str, service: str | None) -> None:
        """Keep the legacy Endpoints object of ``service`` equal to its slices (the controller)."""
        if not service:
            return
        slices = [
            obj
            for (res, ns, _), obj in sorted(self.objects.items())
            if res == SLICES and ns == namespace and _service_of(obj) == service
        ]
        key = (ENDPOINTS, namespace, service)
        if not slices:
            if key in self.objects:
                self.resource_version += 1
                gone = self.objects.pop(key)
                gone["metadata"]["resourceVersion"] = str(self.resource_version)
                self._record(ENDPOINTS, namespace, "DELETED", gone)
            return
        subsets = [s for s in (_subset(obj) for obj in slices) if s]
        obj: dict[str, Any] = {
            "metadata": {
                "name": service,
                "namespace": namespace,
                "uid": f"uid-endpoints-{namespace}-{service}",
            },
        }
        if subsets:
            obj["subsets"] = subsets
        previous = self.objects.get(key)
        if previous is not None and _same(previous, obj):
            return
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        self.objects[key] = {"kind": "Endpoints", "apiVersion": "v1", **obj}
        self._record(ENDPOINTS, namespace, "MODIFIED" if previous else "ADDED", obj, previous)


def _version_of(event: Event) -> int:
    return event.resource_version


def _service_of(obj: Mapping[str, Any]) -> str | None:
    labels = obj["metadata"].get("labels") or {}
    return labels.get(SERVICE_LABEL)


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def strip(obj: Mapping[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        meta = dict(body["metadata"])
        meta.pop("resourceVersion", None)
        body["metadata"] = meta
        return body

    return strip(a) == strip(b)


def _subset(slice_: Mapping[str, Any]) -> dict[str, Any] | None:
    """One Endpoints subset from one slice: ready addresses, not-ready addresses, ports."""
    if slice_.get("addressType") == "FQDN":
        return None  # the endpoints controller never mirrors FQDN slices
    ready: list[dict[str, Any]] = []
    not_ready: list[dict[str, Any]] = []
    for endpoint in slice_.get("endpoints") or ():
        conditions = endpoint.get("conditions") or {}
        for ip in endpoint.get("addresses") or ():
            address: dict[str, Any] = {"ip": ip}
            if endpoint.get("nodeName"):
                address["nodeName"] = endpoint["nodeName"]
            if endpoint.get("targetRef"):
                address["targetRef"] = endpoint["targetRef"]
            if endpoint.get("hostname"):
                address["hostname"] = endpoint["hostname"]
            is_ready = conditions.get("ready") is not False and not conditions.get("terminating")
            (ready if is_ready else not_ready).append(address)
    if not ready and not not_ready:
        return None
    subset: dict[str, Any] = {}
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    ports = [
        {k: v for k, v in port.items() if k in ("name", "port", "protocol", "appProtocol")}
        for port in slice_.get("ports") or ()
    ]
    if ports:
        subset["ports"] = ports
    return subset
