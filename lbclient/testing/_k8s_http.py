"""The HTTP side of KubernetesTestServer: routing, auth, list, and chunked watch streams.

Behaviour follows the API concepts page and the apiserver's cacher (see the module docstring
of ``lbclient.testing.kubernetes`` for the supported subset). Every error is a ``Status``
object with the real ``reason`` and ``code``.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from lbclient.testing._k8s_store import (
    ENDPOINTS,
    KINDS,
    SLICES,
    SelectorError,
    Store,
    parse_field_selector,
    parse_selector,
)

if TYPE_CHECKING:
    from lbclient.testing.kubernetes import KubernetesTestServer

_ROUTES = {
    # path prefix -> (resource, API group for messages)
    "/apis/discovery.k8s.io/v1/": (SLICES, "discovery.k8s.io"),
    "/api/v1/": (ENDPOINTS, ""),
}


class APIServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    owner: KubernetesTestServer

    def __init__(self, address: tuple[str, int], owner: KubernetesTestServer) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.stopping = False
        super().__init__(address, Handler)

    def drop_connections(self) -> None:
        """Cut every open connection (keep-alive and watch streams), like a dying process."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: APIServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    # -- plumbing ------------------------------------------------------------------------

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _fail(self, code: int, reason: str, message: str, **details: Any) -> None:
        self._send_json(code, status(code, reason, message, **details))

    def _chunk(self, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    # -- requests ------------------------------------------------------------------------

    def do_GET(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        owner.record(self.command, url.path, query, self.headers.get("Authorization"))
        if not self._authorized():
            self._fail(401, "Unauthorized", "Unauthorized")
            return
        route = self._route(url.path)
        if route is None:
            self._fail(404, "NotFound", "the server could not find the requested resource")
            return
        resource, group, namespace, name = route
        if namespace is not None and namespace in owner.forbidden_namespaces:
            verb = "watch" if _truthy(query.get("watch")) else "list"
            qualified = f"{resource}.{group}" if group else resource
            self._fail(
                403,
                "Forbidden",
                f'{qualified} is forbidden: User "{owner.user}" cannot {verb} resource '
                f'"{resource}" in API group "{group}" in the namespace "{namespace}"',
                group=group,
                kind=resource,
            )
            return
        try:
            labels = parse_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"))
        except SelectorError as exc:
            self._fail(400, "BadRequest", f"unable to parse requirement: {exc}")
            return
        if name is not None:
            self._get_one(resource, group, namespace or "", name)
        elif _truthy(query.get("watch")):
            self._watch(resource, namespace, labels, fields, query)
        else:
            self._list(resource, namespace, labels, fields)

    def _unsupported(self) -> None:
        self._fail(405, "MethodNotAllowed", "the test server only serves get, list and watch")

    do_POST = do_PUT = do_PATCH = do_DELETE = _unsupported

    def _authorized(self) -> bool:
        token = self.server.owner.token
        if token is None:
            return True
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and value.strip() == token

    def _route(self, path: str) -> tuple[str, str, str | None, str | None] | None:
        """``(resource, group, namespace or None for all, name or None)`` or None: 404."""
        for prefix, (resource, group) in _ROUTES.items():
            if not path.startswith(prefix):
                continue
            if resource == SLICES and not self.server.owner.endpointslices:
                return None
            parts = path[len(prefix) :].strip("/").split("/")
            if parts == [resource]:
                return resource, group, None, None
            if len(parts) in (3, 4) and parts[0] == "namespaces" and parts[2] == resource:
                return resource, group, parts[1], parts[3] if len(parts) == 4 else None
        return None

    def _get_one(self, resource: str, group: str, namespace: str, name: str) -> None:
        obj = self.server.owner.store.get(resource, namespace, name)
        if obj is None:
            qualified = f"{resource}.{group}" if group else resource
            self._fail(404, "NotFound", f'{qualified} "{name}" not found', name=name, kind=resource)
            return
        self._send_json(200, obj)

    def _list(self, resource: str, namespace: str | None, labels: Any, fields: Any) -> None:
        version, items = self.server.owner.store.query(resource, namespace, labels, fields)
        kind, api_version = KINDS[resource]
        for item in items:  # list items carry no kind/apiVersion, as from a real server
            item.pop("kind", None)
            item.pop("apiVersion", None)
        self._send_json(
            200,
            {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(version)},
                "items": items,
            },
        )

    def _watch(
        self,
        resource: str,
        namespace: str | None,
        labels: Any,
        fields: Any,
        query: dict[str, str],
    ) -> None:
        owner = self.server.owner
        store: Store = owner.store
        version_text = query.get("resourceVersion", "")
        if version_text not in ("", "0") and not version_text.isdigit():
            self._fail(400, "BadRequest", f"invalid resource version: {version_text!r}")
            return
        timeout_text = query.get("timeoutSeconds")
        timeout = (
            float(timeout_text)
            if timeout_text and timeout_text.isdigit()
            else random.uniform(owner.watch_timeout, 2 * owner.watch_timeout)
        )
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        if owner.expired_as_http_410 and version_text.isdigit():
            with store.changed:
                if int(version_text) < store.compacted:
                    owner.expired_watches += 1
                    self._fail(
                        410,
                        "Expired",
                        f"too old resource version: {version_text} ({store.compacted})",
                    )
                    return
        with store.changed:  # before answering: close_watches() may follow at once
            generation = store.generation
            held = not owner.watch_gate.is_set()  # only watches asked for while held wait
            store.open_watches += 1  # last: whoever sees it knows the two above are decided
        try:
            self._stream_events(
                store, resource, namespace, labels, fields, version_text, bookmarks, timeout,
                generation, held,
            )  # fmt: skip
        finally:
            with store.changed:
                store.open_watches -= 1

    def _stream_events(
        self,
        store: Store,
        resource: str,
        namespace: str | None,
        labels: Any,
        fields: Any,
        version_text: str,
        bookmarks: bool,
        timeout: float,
        generation: int,
        held: bool,
    ) -> None:
        """Serve one watch stream until it ends (timeout, close_watches, shutdown)."""
        owner = self.server.owner
        kind, api_version = KINDS[resource]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        pending: list[dict[str, Any]] = []
        if held:
            owner.watch_gate.wait()
        with store.changed:
            if version_text in ("", "0"):
                # "Start at most recent": synthetic ADDED events for the current state first.
                current, items = store.query(resource, namespace, labels, fields)
                pending = [{"type": "ADDED", "object": obj} for obj in items]
                seen = current
            else:
                seen = int(version_text)
                if seen < store.compacted:
                    owner.expired_watches += 1
                    self._chunk(
                        {
                            "type": "ERROR",
                            "object": status(
                                410,
                                "Expired",
                                f"too old resource version: {seen} ({store.compacted})",
                            ),
                        }
                    )
                    self._end_stream()
                    return
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + owner.bookmark_interval
        try:
            while True:
                for body in pending:
                    self._chunk(body)
                pending = []
                with store.changed:
                    while True:
                        now = time.monotonic()
                        if self.server.stopping:
                            self.close_connection = True
                            return  # cut without the final chunk: the process went away
                        if store.generation != generation:
                            self._end_stream()  # a clean end, as at the server's timeout
                            return
                        if now >= deadline:
                            self._end_stream()
                            return
                        events = store.events_after(resource, namespace, seen)
                        if events:
                            seen = events[-1].resource_version
                            seen_by = (e.as_seen_by(labels, fields) for e in events)
                            pending = [body for body in seen_by if body is not None]
                            if pending:
                                break
                            continue
                        if bookmarks and now >= next_bookmark:
                            seen = max(seen, store.resource_version)
                            next_bookmark = now + owner.bookmark_interval
                            pending = [
                                {
                                    "type": "BOOKMARK",
                                    "object": {
                                        "kind": kind,
                                        "apiVersion": api_version,
                                        "metadata": {"resourceVersion": str(seen)},
                                    },
                                }
                            ]
                            break
                        wake = deadline if not bookmarks else min(deadline, next_bookmark)
                        store.changed.wait(max(0.0, wake - now))
        except OSError:
            self.close_connection = True

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")
