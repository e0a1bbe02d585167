"""The HTTP side of KubernetesTestServer: routing, auth, list, and chunked watch streams.

Behaviour follows the API concepts page and the apiserver's cacher (see the module docstring
of ``lbclient.testing.kubernetes`` for the supported subset). Every error is a ``Status``
object with the real ``reason`` and ``code``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import re
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from lbclient.testing._k8s_selector import (
    Selector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
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


def status(code: int, reason: str, message: str, details: dict[str, Any] | None) -> dict[str, Any]:
    """A ``Status`` object; ``details`` None leaves the key out, as apimachinery does."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class Refused(Exception):
    """An answer other than 200, as a Status object."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.body = status(code, reason, message, details)


def _resource_details(group: str, resource: str, **extra: str) -> dict[str, Any]:
    """``details`` naming a resource: an empty group (core) is omitted, as in Go."""
    return {**extra, **({"group": group} if group else {}), "kind": resource}


@dataclasses.dataclass(frozen=True)
class Query:
    """The list/watch options of one request, parsed and checked as the apiserver does."""

    watch: bool
    bookmarks: bool
    timeout: int | None
    version: int | None  # None: "" (most recent); 0: "0" (any)
    match: str
    labels: Selector
    fields: Selector


def _bool(value: str | None) -> bool:
    # apimachinery's query conversion: absent, "false" or "0" is false; anything else true.
    return value is not None and value.lower() not in ("false", "0")


def parse_query(query: Mapping[str, str]) -> Query:
    """Raise Refused with the apiserver's answer for options it would refuse."""
    timeout_text = query.get("timeoutSeconds", "")
    if timeout_text and re.fullmatch(r"[+-]?\d+", timeout_text) is None:
        raise Refused(
            400, "BadRequest", f'strconv.ParseInt: parsing "{timeout_text}": invalid syntax'
        )
    version_text = query.get("resourceVersion", "")
    if version_text and not version_text.isdigit():
        raise Refused(
            400,
            "BadRequest",
            f'resourceVersion: Invalid value: "{version_text}": strconv.ParseUint: parsing '
            f'"{version_text}": invalid syntax',
        )
    watch = _bool(query.get("watch"))
    match = query.get("resourceVersionMatch", "")
    if match or "sendInitialEvents" in query:
        _check_match(match, version_text, watch, "sendInitialEvents" in query)
    if query.get("continue"):
        raise Refused(
            400,
            "BadRequest",
            f'continue: Invalid value: "{query["continue"]}": continue key is not valid '
            "(the test server never returns one: every list is complete)",
        )
    try:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
    except SelectorError as exc:
        raise Refused(400, "BadRequest", str(exc)) from None
    return Query(
        watch=watch,
        bookmarks=_bool(query.get("allowWatchBookmarks")),
        timeout=int(timeout_text) if timeout_text else None,
        version=int(version_text) if version_text else None,
        match=match,
        labels=labels,
        fields=fields,
    )


def _check_match(match: str, version: str, watch: bool, initial_events: bool) -> None:
    def invalid(field: str, kind: str, detail: str) -> Refused:
        message = f"{kind}: {detail}"
        return Refused(
            422,
            "Invalid",
            f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}',
            {
                "group": "meta.k8s.io",
                "kind": "ListOptions",
                "causes": [{"reason": f"FieldValue{kind.split()[0]}", "message": message,
                            "field": field}],
            },
        )  # fmt: skip

    if initial_events:
        # A cluster with the WatchList feature gate off: clients fall back to list + watch.
        raise invalid(
            "sendInitialEvents",
            "Forbidden",
            "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
        )
    if watch:
        raise invalid(
            "resourceVersionMatch", "Forbidden", "resourceVersionMatch is forbidden for watch"
        )
    if not version:
        raise invalid(
            "resourceVersionMatch",
            "Forbidden",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )
    if match not in ("Exact", "NotOlderThan"):
        raise invalid(
            "resourceVersionMatch",
            "Unsupported value",
            f'"{match}": supported values: "Exact", "NotOlderThan"',
        )
    if match == "Exact" and version == "0":
        raise invalid(
            "resourceVersionMatch",
            "Forbidden",
            'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
        )


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
                verb = "watch" if _bool(query.get("watch")) else "list"
            qualified = f"{resource}.{group}" if group else resource
            raise Refused(
                403,
                "Forbidden",
                f'{qualified} is forbidden: User "{owner.user}" cannot {verb} resource '
                f'"{resource}" in API group "{group}" in the namespace "{namespace}"',
                _resource_details(group, resource),
            )
        if self.command != "GET":
            raise Refused(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                {"causes": [{"reason": "UnexpectedServerResponse",
                             "message": "405: Method Not Allowed"}]},
            )  # fmt: skip
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
                _resource_details(group, resource, name=name),
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
