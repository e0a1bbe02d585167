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
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from lbclient.testing._k8s_options import (
    Query,
    Refused,
    parse_query,
    query_bool,
    resource_details,
    status,
)
from lbclient.testing._k8s_store import ENDPOINTS, KINDS, SLICES, Store
from lbclient.testing._server import ProtocolHandler, QuietHTTPServer

if TYPE_CHECKING:
    from lbclient.testing.kubernetes import KubernetesTestServer

_ROUTES = {
    # path prefix -> (resource, API group for messages)
    "/apis/discovery.k8s.io/v1/": (SLICES, "discovery.k8s.io"),
    "/api/v1/": (ENDPOINTS, ""),
}


class APIServer(QuietHTTPServer):
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


_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}


class Handler(ProtocolHandler):
    server: APIServer

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
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _chunk(self, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    # -- requests ------------------------------------------------------------------------

    def serve(self) -> None:
        self.read_body()  # refused or not, the body must leave the connection
        owner = self.server.owner
        url = urlsplit(self.path)
        # Go reads the first value of a repeated parameter.
        query: dict[str, str] = {}
        for key, value in parse_qsl(url.query, keep_blank_values=True):
            query.setdefault(key, value)
        owner.record(self.command, url.path, query, self.headers.get("Authorization"))
        try:
            self._answer(url.path, query)
        except Refused as refused:
            self._send_json(refused.body["code"], refused.body)

    def _answer(self, path: str, query: dict[str, str]) -> None:
        owner = self.server.owner
        if not self._authorized():
            raise Refused(401, "Unauthorized", "Unauthorized")
        route = self._route(path)
        if route is None:
            raise Refused(404, "NotFound", "the server could not find the requested resource", {})
        resource, group, namespace, name = route
        if namespace is not None and namespace in owner.forbidden_namespaces:
            verb = _VERBS.get(self.command, self.command.lower())
            if self.command == "DELETE":
                verb = "delete" if name else "deletecollection"
            elif verb == "get" and name is None:
                verb = "watch" if query_bool(query.get("watch")) else "list"
            qualified = f"{resource}.{group}" if group else resource
            raise Refused(
                403,
                "Forbidden",
                f'{qualified} is forbidden: User "{owner.user}" cannot {verb} resource '
                f'"{resource}" in API group "{group}" in the namespace "{namespace}"',
                resource_details(group, resource),
            )
        if self.command != "GET":
            raise Refused(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                {},
            )
        options = parse_query(query)
        if name is not None:
            self._get_one(resource, group, namespace or "", name)
        elif options.watch:
            self._watch(resource, namespace, options)
        else:
            self._list(resource, namespace, options)

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
            raise Refused(
                404,
                "NotFound",
                f'{qualified} "{name}" not found',
                resource_details(group, resource, name=name),
            )
        self._send_json(200, obj)

    def _list(self, resource: str, namespace: str | None, options: Query) -> None:
        store = self.server.owner.store
        wanted = options.version or 0
        if wanted > store.resource_version:
            self._wait_until_fresh(wanted)
        version, items = store.query(resource, namespace, options.labels, options.fields)
        if options.match == "Exact" and wanted != version:
            # No snapshots here: an older exact version reads as compacted (the client relists).
            raise Refused(410, "Expired", f"too old resource version: {wanted} ({version})")
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

    def _wait_until_fresh(self, wanted: int) -> None:
        """A list "not older than" a version the cache has not seen: the watch cache waits a
        few seconds for it, then answers 504 ResourceVersionTooLarge (retry after 1 s)."""
        store = self.server.owner.store
        deadline = time.monotonic() + self.server.owner.too_large_wait
        with store.changed:
            while store.resource_version < wanted and not self.server.stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Refused(
                        504,
                        "Timeout",
                        f"Timeout: Too large resource version: {wanted}, current: "
                        f"{store.resource_version}",
                        {
                            "causes": [{"reason": "ResourceVersionTooLarge",
                                        "message": "Too large resource version"}],
                            "retryAfterSeconds": 1,
                        },
                    )  # fmt: skip
                store.changed.wait(left)

    def _watch(self, resource: str, namespace: str | None, options: Query) -> None:
        owner = self.server.owner
        store: Store = owner.store
        timeout = (
            float(options.timeout)
            if options.timeout and options.timeout > 0
            else random.uniform(owner.watch_timeout, 2 * owner.watch_timeout)
        )
        if owner.expired_as_http_410 and options.version:
            with store.changed:
                if options.version < store.compacted:
                    owner.expired_watches += 1
                    raise Refused(
                        410,
                        "Expired",
                        f"too old resource version: {options.version} ({store.compacted})",
                    )
        with store.changed:  # before answering: close_watches() may follow at once
            generation = store.generation
            held = not owner.watch_gate.is_set()  # only watches asked for while held wait
            store.open_watches += 1  # last: whoever sees it knows the two above are decided
        try:
            self._stream_events(store, resource, namespace, options, timeout, generation, held)
        finally:
            with store.changed:
                store.open_watches -= 1

    def _stream_events(
        self,
        store: Store,
        resource: str,
        namespace: str | None,
        options: Query,
        timeout: float,
        generation: int,
        held: bool,
    ) -> None:
        """Serve one watch stream until it ends (timeout, close_watches, shutdown)."""
        owner = self.server.owner
        labels, fields, bookmarks = options.labels, options.fields, options.bookmarks
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
            if not options.version:
                # "Start at most recent": synthetic ADDED events for the current state first.
                current, items = store.query(resource, namespace, labels, fields)
                pending = [{"type": "ADDED", "object": obj} for obj in items]
                seen = current
            else:
                seen = options.version
                if seen < store.compacted:
                    owner.expired_watches += 1
                    self._chunk(
                        {
                            "type": "ERROR",
                            "object": status(
                                410,
                                "Expired",
                                f"too old resource version: {seen} ({store.compacted})",
                                None,
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
