"""KubernetesTestServer: a real HTTP server speaking the Kubernetes API for endpoint discovery.

It implements list and watch of EndpointSlices (``discovery.k8s.io/v1``) and legacy core/v1
Endpoints, as documented by the API concepts page and done by the apiserver's watch cache:

- one global ``resourceVersion`` counter, bumped by every write; lists carry it in
  ``metadata.resourceVersion``;
- ``watch=true``: 200, ``Transfer-Encoding: chunked``, one JSON event per line
  (``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``/``ERROR``); without ``resourceVersion``
  (or with ``"0"``) the stream starts with synthetic ``ADDED`` events for the current state;
- a ``resourceVersion`` older than the last ``compact()`` answers 200 with one ``ERROR`` event
  (``code`` 410, ``reason`` ``Expired``) and closes the stream;
- ``allowWatchBookmarks=true``: a ``BOOKMARK`` (kind, apiVersion, metadata.resourceVersion
  only) every ``bookmark_interval`` seconds of silence;
- ``timeoutSeconds`` ends the stream cleanly after that long; without it, after a random
  ``watch_timeout`` to twice that (a real server: 30 to 60 minutes);
- a list at a ``resourceVersion`` the server has not reached waits ``too_large_wait``
  seconds (the watch cache: 3 s), then answers 504 ``Timeout`` with the
  ``ResourceVersionTooLarge`` cause;
- label selectors with apimachinery's whole grammar and its 400 messages (``=``, ``==``,
  ``!=``, ``in``, ``notin``, exists, ``!``, ``>``, ``<``; keys and values validated); field
  selectors ``metadata.name`` / ``metadata.namespace`` (others: 400 "field label not
  supported");
- boolean parameters read as apimachinery reads them (absent, ``false`` or ``0``: false;
  anything else, even empty: true); ``timeoutSeconds`` must be an integer (400 otherwise);
- an empty slice is served as ``"endpoints": null`` and ``"ports": null``;
- with ``token`` set, a request without ``Authorization: Bearer <token>`` gets 401;
  ``forbid(namespace)`` answers 403 with the apiserver's RBAC message;
- an object whose labels change sends DELETED to watchers that matched only the old labels
  and ADDED to those that match only the new ones, as the apiserver's watch cache does;
- every error is a ``Status`` object; every request body is read, so a kept-alive
  connection stays usable after any refusal.

Fidelity, request by request (S: as the real server; R: refused as a real server refuses;
O: out of scope, refused with the Status shown):

=============================================  ===  ============================================
``GET`` list / watch / get (both resources)    S    all parameters below
``labelSelector``, ``fieldSelector``           S    bad ones: 400 with apimachinery's message
``watch``, ``allowWatchBookmarks``             S
``resourceVersion`` (list, watch)              S    future list: 504 after ``too_large_wait``
``timeoutSeconds``                             S    not an integer: 400
``resourceVersionMatch=NotOlderThan``          S    without ``resourceVersion`` etc.: 422
``resourceVersionMatch=Exact``                 S/O  at the current version; older: 410 Expired
``limit``                                      S    ignored, the whole list (as the watch cache)
``continue``                                   R    400 (no list is ever split)
``sendInitialEvents``                          R    422, as with the WatchList gate off
``POST``/``PUT``/``PATCH``/``DELETE``          O    405 MethodNotAllowed Status; write through
                                                    the knobs (``scale``, ``apply_slice``, ...)
``HEAD``, ``OPTIONS``, other methods           R    405 MethodNotAllowed Status
other paths and API groups                     R    404 NotFound Status
=============================================  ===  ============================================

>>> with KubernetesTestServer() as api:                                    # doctest: +SKIP
...     api.scale("shop", "orders", ["127.0.0.1:8001", "127.0.0.1:8002"])
...     configuration = kubernetes.client.Configuration(host=api.url)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from lbclient._instance import split_host_port
from lbclient.testing._k8s_http import APIServer
from lbclient.testing._k8s_selector import Requirement
from lbclient.testing._k8s_store import ENDPOINTS, SERVICE_LABEL, SLICES, Store
from lbclient.testing._server import LoopbackServer

__all__ = ["KubernetesTestServer", "endpoint"]


def endpoint(
    address: str,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    node: str | None = None,
    zone: str | None = None,
    pod: str | None = None,
    namespace: str | None = None,
    hostname: str | None = None,
    hints: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One EndpointSlice endpoint as the API serves it; a None condition is left out (null).

    ``hints``: the zones of its topology hint (``hints.forZones``); default: its own zone,
    as the EndpointSlice controller assigns them when zones are balanced; ``()``: no hint."""
    conditions = {
        key: value
        for key, value in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if value is not None
    }
    body: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if node:
        body["nodeName"] = node
    if zone:
        body["zone"] = zone
    if hints is None:
        hints = (zone,) if zone else ()
    if hints:
        body["hints"] = {"forZones": [{"name": name} for name in hints]}
    if hostname:
        body["hostname"] = hostname
    if pod:
        body["targetRef"] = {
            "kind": "Pod",
            "name": pod,
            **({"namespace": namespace} if namespace else {}),
        }
    return body


class KubernetesTestServer(LoopbackServer[APIServer]):
    """A Kubernetes API server for tests: ``start()``/``stop()`` or a context manager, ``url``.

    Knobs: ``scale`` (the set of pods of a service), ``set_conditions`` (not ready,
    terminating), ``apply_slice``/``delete_slice`` (any slice layout), ``compact`` (old
    versions expire), ``close_watches`` (clean end, as at the server's watch timeout),
    ``watches_held`` (make reconnecting watches wait: with ``compact`` they get the 410),
    ``expired_as_http_410`` (also a constructor argument), ``down``/``up`` (connections cut,
    same port and state after), ``forbid``/``allow`` (403), ``endpointslices=False`` (a
    cluster without discovery.k8s.io/v1), ``too_large_wait``. ``requests`` records every request as
    ``(method, path, query, had_authorization)``; the token itself is never stored.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        bookmark_interval: float = 1.0,
        watch_timeout: float = 1800.0,
        endpointslices: bool = True,
        user: str = "system:serviceaccount:default:default",
        expired_as_http_410: bool = False,
        too_large_wait: float = 3.0,
    ) -> None:
        super().__init__(host, port)
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.endpointslices = endpointslices
        """False: serve only core/v1 Endpoints, like a cluster from before discovery.k8s.io/v1."""
        self.user = user
        self.forbidden_namespaces: set[str] = set()
        self.watch_gate = threading.Event()
        self.watch_gate.set()
        self.too_large_wait = too_large_wait
        """How long a list at a future resourceVersion waits before its 504 (real: 3 s)."""
        self.expired_as_http_410 = expired_as_http_410
        """True: answer a too-old watch with an HTTP 410 Status instead of the ERROR event on
        a 200 stream (what some proxies and old servers do; clients must handle both)."""
        self.expired_watches = 0
        """How many watches were answered with the ERROR 410 event."""
        self.store = Store()
        self.requests: list[tuple[str, str, dict[str, str], bool]] = []
        self._requests_lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the token
        return f"<KubernetesTestServer {self.url} running={self.running}>"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _make_server(self) -> APIServer:
        return APIServer((self.host, self.port), self)

    def _thread_name(self) -> str:
        return "k8s-test-api"

    def _before_close(self, server: APIServer) -> None:
        # Stopping cuts every connection, watch streams (and watches held at the gate) included.
        server.stopping = True
        self.watch_gate.set()
        self.store.close_watches()

    def _after_close(self, server: APIServer) -> None:
        server.drop_connections()

    def down(self) -> None:
        """The API server goes away: connections refused until ``up()``. State is kept."""
        self.stop()

    def up(self) -> KubernetesTestServer:
        """Come back on the same port with the same objects and versions."""
        return self.start()

    def record(self, method: str, path: str, query: dict[str, str], auth: str | None) -> None:
        with self._requests_lock:
            self.requests.append((method, path, query, auth is not None))

    # -- knobs -----------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def apply_slice(
        self,
        namespace: str,
        service: str,
        name: str,
        *,
        endpoints: Sequence[Mapping[str, Any]] | None,
        ports: Sequence[Mapping[str, Any]] | None,
        address_type: str = "IPv4",
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create or replace one EndpointSlice of ``service`` (None or [] serve as null)."""
        body = {
            "metadata": {
                "name": name,
                "labels": {
                    SERVICE_LABEL: service,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                    **(labels or {}),
                },
            },
            "addressType": address_type,
            "endpoints": [dict(e) for e in endpoints] if endpoints else None,
            "ports": [dict(p) for p in ports] if ports else None,
        }
        return self.store.put(SLICES, namespace, body)

    def delete_slice(self, namespace: str, name: str) -> bool:
        return self.store.delete(SLICES, namespace, name)

    def slices(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """The current slices of ``service`` (copies)."""
        selector = (Requirement(SERVICE_LABEL, "=", frozenset({service})),)
        return self.store.query(SLICES, namespace, selector)[1]  # copies of these only

    def scale(
        self,
        namespace: str,
        service: str,
        addresses: Iterable[str],
        *,
        port_name: str = "http",
        app_protocol: str | None = None,
        zone: str | None = None,
        node: str | None = None,
    ) -> list[str]:
        """Make ``service``'s pods exactly ``addresses`` (``"host:port"``); return slice names.

        Pods are grouped into one slice per port (an EndpointSlice has one port list), named
        ``<service>-<port>``; only slices whose content changes produce watch events.
        """
        by_port: dict[int, list[str]] = {}
        for address in addresses:
            host, port = split_host_port(address, service)
            by_port.setdefault(port, []).append(host)
        names = []
        for port, hosts in sorted(by_port.items()):
            name = f"{service}-{port}"
            names.append(name)
            existing = {
                e["addresses"][0]: e
                for obj in self.slices(namespace, service)
                if obj["metadata"]["name"] == name
                for e in obj.get("endpoints") or ()
            }
            endpoints = [
                existing.get(host)
                or endpoint(
                    host,
                    node=node,
                    zone=zone,
                    pod=f"{service}-{port}-{i}",
                    namespace=namespace,
                )
                for i, host in enumerate(hosts)
            ]
            port_spec: dict[str, Any] = {"name": port_name, "port": port, "protocol": "TCP"}
            if app_protocol:
                port_spec["appProtocol"] = app_protocol
            self.apply_slice(namespace, service, name, endpoints=endpoints, ports=[port_spec])
        for obj in self.slices(namespace, service):
            if obj["metadata"]["name"] not in names:
                self.delete_slice(namespace, obj["metadata"]["name"])
        return names

    def set_conditions(
        self,
        namespace: str,
        service: str,
        address: str,
        *,
        ready: bool | None = None,
        serving: bool | None = None,
        terminating: bool | None = None,
    ) -> int:
        """Set the conditions of the endpoints at ``address`` (``host`` or ``host:port``).

        Returns how many endpoints changed. ``terminating=True`` alone also sets ready to
        false, as the endpointslice controller does; serving stays as given (default true).
        """
        host, port = (
            split_host_port(address, service) if ":" in address.strip("[]") else (address, None)
        )
        changed = 0
        for obj in self.slices(namespace, service):
            ports = {p.get("port") for p in obj.get("ports") or ()}
            if port is not None and port not in ports:
                continue
            endpoints = obj.get("endpoints") or []
            touched = False
            for e in endpoints:
                if host not in e.get("addresses", ()):
                    continue
                conditions = dict(e.get("conditions") or {})
                if terminating is not None:
                    conditions["terminating"] = terminating
                    if terminating:
                        conditions["ready"] = False
                        conditions.setdefault("serving", True)
                if ready is not None:
                    conditions["ready"] = ready
                if serving is not None:
                    conditions["serving"] = serving
                e["conditions"] = conditions
                touched = True
                changed += 1
            if touched:
                self.apply_slice(
                    namespace,
                    service,
                    obj["metadata"]["name"],
                    endpoints=endpoints,
                    ports=obj.get("ports"),
                    address_type=obj.get("addressType", "IPv4"),
                )
        return changed

    def endpoints_object(self, namespace: str, service: str) -> dict[str, Any] | None:
        """The mirrored core/v1 Endpoints object of ``service``."""
        return self.store.get(ENDPOINTS, namespace, service)

    def compact(self) -> int:
        """Expire the watch history: watches from older versions get ERROR 410."""
        return self.store.compact()

    def close_watches(self) -> None:
        """End every open watch stream (clients reconnect from their last version)."""
        self.store.close_watches()

    @property
    def open_watches(self) -> int:
        """How many watch streams are being served right now."""
        with self.store.changed:
            return self.store.open_watches

    @contextlib.contextmanager
    def watches_held(self) -> Iterator[None]:
        """New watch requests wait (headers sent, no events) until the block exits.

        With ``close_watches()`` and ``compact()`` inside the block, reconnecting clients ask
        for a version that has expired by the time they are served: the ERROR 410 path.
        """
        self.watch_gate.clear()
        try:
            yield
        finally:
            self.watch_gate.set()

    def forbid(self, namespace: str) -> None:
        """Answer 403 for every request in ``namespace`` (RBAC without list/watch)."""
        self.forbidden_namespaces.add(namespace)

    def allow(self, namespace: str) -> None:
        self.forbidden_namespaces.discard(namespace)

    def watch_requests(self) -> list[dict[str, str]]:
        """The query of every watch request received so far."""
        with self._requests_lock:
            return [q for _, _, q, _ in self.requests if q.get("watch") in ("true", "1")]

    def list_requests(self) -> list[dict[str, str]]:
        with self._requests_lock:
            return [q for _, _, q, _ in self.requests if q.get("watch") not in ("true", "1")]
