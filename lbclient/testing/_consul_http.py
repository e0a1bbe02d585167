"""The HTTP face of ConsulTestServer: routing, query parsing, body decoding, ACLs, headers.

Written from Consul's API docs and agent/http.go: see reference/consul.md. Request bodies
are decoded in ``_consul_decode``, the catalog lives in ``_consul_state``.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from lbclient._duration import parse_go_duration
from lbclient.testing._consul_bexpr import FilterError, compile_filter
from lbclient.testing._consul_decode import canonical, decode_json, decode_registration
from lbclient.testing._consul_state import ConsulHTTPError
from lbclient.testing._server import ProtocolHandler

if TYPE_CHECKING:
    from lbclient.testing.consul import ConsulTestServer

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}

_ENTERPRISE = (
    ("ns", "X-Consul-Namespace", "Namespaces"),
    ("partition", "X-Consul-Partition", "Partitions"),
)


class ConsulHandler(ProtocolHandler):
    server: Any  # a QuietHTTPServer with a ``consul`` attribute

    def setup(self) -> None:
        super().setup()
        self.consul.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            with contextlib.suppress(OSError):
                super().finish()
        finally:
            self.consul.track(self.connection, add=False)

    @property
    def consul(self) -> ConsulTestServer:
        return self.server.consul  # type: ignore[no-any-return]

    def serve(self) -> None:
        consul = self.consul
        body = self.read_body()
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qsl(parts.query, keep_blank_values=True)
        consul.record(self.command, path)
        injected = consul.take_failure()
        if injected is not None:
            self._send(injected, b"injected failure (ConsulTestServer.fail_next)", "text/plain")
            return
        if consul.delay:
            time.sleep(consul.delay)
        try:
            status, payload, headers = self._route(path, query, body)
        except ConsulHTTPError as exc:
            self._send(exc.status, exc.text.encode(), "text/plain; charset=utf-8", exc.headers)
            return
        except _Abort:
            self.close_connection = True
            return
        if payload is not None and consul.take_malformed() is not None:
            payload = consul.malformed_body
        self._send(status, payload or b"", "application/json", headers)

    def _send(
        self, status: int, payload: bytes, ctype: str, headers: Mapping[str, str] | None = None
    ) -> None:
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines += [
            f"Content-Type: {ctype}",
            f"Content-Length: {len(payload)}",
            f"Date: {self.date_time_string()}",
        ]
        if self.command == "HEAD":
            payload = b""
        # one write per answer: no Nagle stall, and a down() mid-answer cannot split it
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)

    # -- routing ----------------------------------------------------------------------------

    def _endpoint(self, path: str) -> tuple[str, Any, str] | None:
        """``(method, handler, path argument)`` of the endpoint serving ``path``."""
        reads = {
            "/v1/health/service/": self._health_service,
            "/v1/catalog/service/": self._catalog_service,
        }
        for prefix, read in reads.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                return "GET", read, path[len(prefix) :]
        if path == "/v1/catalog/services":
            return "GET", self._catalog_services, ""
        if path == "/v1/agent/service/register":
            return "PUT", self._register, ""
        if path.startswith("/v1/agent/service/deregister/"):
            return "PUT", self._deregister, path.rsplit("/", 1)[1]
        for action in ("pass", "warn", "fail", "update"):
            prefix = f"/v1/agent/check/{action}/"
            if path.startswith(prefix):
                return "PUT", self._update_check, path[len(prefix) :]
        return None

    def _route(
        self, path: str, query: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        endpoint = self._endpoint(path)
        if endpoint is None:
            raise ConsulHTTPError(404, "")  # Consul's index handler: 404, empty body
        method, handler, argument = endpoint
        allow = {"Allow": f"OPTIONS,{method}"}
        if self.command == "OPTIONS":
            return 200, None, allow
        if self.command != method:
            raise ConsulHTTPError(405, f"method {self.command} not allowed", allow)
        params: dict[str, list[str]] = {}
        for key, value in query:
            params.setdefault(key, []).append(value)
        for param, header, feature in _ENTERPRISE:
            if self.headers.get(header):
                raise ConsulHTTPError(
                    400,
                    f'Bad request: Invalid header: "{header}" - {feature} are a Consul Enterprise '
                    "feature",
                )
            if params.get(param, [""])[0]:
                raise ConsulHTTPError(
                    400,
                    f'Bad request: Invalid query parameter: "{param}" - {feature} are a Consul '
                    "Enterprise feature",
                )
        result: tuple[int, bytes | None, dict[str, str]] = handler(
            path, argument, params, self._token(params), body
        )
        return result

    def _token(self, params: Mapping[str, list[str]]) -> str | None:
        """Consul's order: ``?token``, then ``X-Consul-Token``, then ``Authorization: Bearer``."""
        token = params.get("token", [""])[0] or self.headers.get("X-Consul-Token")
        auth = self.headers.get("Authorization", "")
        if not token and auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        return token or None

    # -- writes -----------------------------------------------------------------------------

    def _register(
        self, path: str, _: str, params: Mapping[str, list[str]], token: str | None, body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        service, checks = decode_registration(body)
        self.consul.authorize(token, "write", service["Service"])
        self.consul.state.register(service, checks, "replace-existing-checks" in params)
        return 200, None, {}

    def _deregister(
        self, path: str, sid: str, params: Mapping[str, list[str]], token: str | None, body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        # Consul's order: resolve the token, then 404 for an unknown ID, then the permission.
        self.consul.resolve(token)
        self.consul.authorize(token, "write", self.consul.state.service_name(sid))
        self.consul.state.deregister(sid)
        return 200, None, {}

    def _update_check(
        self, path: str, cid: str, params: Mapping[str, list[str]], token: str | None, body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        action = path.split("/")[4]
        if action == "update":
            update = canonical(decode_json(body, {}), {"status": "Status", "output": "Output"})
            status = update.get("Status", "")
            if status not in ("passing", "warning", "critical"):
                raise ConsulHTTPError(400, f'Invalid check status: "{status}"')
            output = str(update.get("Output", ""))
        else:
            status = {"pass": "passing", "warn": "warning", "fail": "critical"}[action]
            output = params.get("note", [""])[0]
        self.consul.resolve(token)
        self.consul.authorize(token, "write", self.consul.state.check_service_name(cid))
        self.consul.state.update_check(cid, status, output)
        return 200, None, {}

    # -- reads ------------------------------------------------------------------------------

    def _blocking(self, name: str | None, params: Mapping[str, list[str]]) -> None:
        """Validate the query options, then wait as a blocking query would."""
        for flag in ("stale", "cached"):
            if flag in params and "consistent" in params:
                raise ConsulHTTPError(
                    400, f"Cannot specify ?{flag} with ?consistent, conflicting semantics."
                )
        max_stale = params.get("max_stale", [""])[0]
        if max_stale:
            try:
                parse_go_duration(max_stale)
            except ValueError:
                raise ConsulHTTPError(400, f'Invalid max_stale value "{max_stale}"') from None
        dc = params.get("dc", [""])[0]
        if dc and dc != self.consul.state.datacenter:
            raise ConsulHTTPError(500, "No path to datacenter")
        index, wait = blocking_options(params)
        if index <= 0:
            return
        state = self.consul.state
        with state.cond:
            if not state.wait_for_change(name, index, wait):
                raise _Abort()
        if not self.consul.running:
            raise _Abort()

    def _headers(
        self, name: str | None, params: Mapping[str, list[str]], token: str | None, filtered: bool
    ) -> dict[str, str]:
        consistency = "leader"
        if "consistent" in params:
            consistency = "consistent"
        elif "stale" in params or "max_stale" in params or "cached" in params:
            consistency = "stale"  # the agent cache always fetches with AllowStale
        headers = {
            "X-Consul-Index": str(self.consul.state.index_of(name)),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": consistency,
        }
        if "cached" in params:
            headers["X-Cache"] = "MISS"  # no agent cache here: every answer is a fresh fetch
        if filtered and token is not None:  # masked for the anonymous token, as Consul does
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return headers

    def _health_service(
        self, path: str, name: str, params: Mapping[str, list[str]], token: str | None, _: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        passing = _parse_passing(params)
        predicate = _parse_filter(params)
        readable = self.consul.authorize_read(token, name)
        self._blocking(name, params)
        state = self.consul.state
        with state.cond:
            entries = state.health_entries(name) if readable and not _peer(params) else []
            headers = self._headers(name, params, token, not readable)
        tags = [t.lower() for t in params.get("tag", [])]
        meta = _node_meta(params)
        result = []
        for entry in entries:
            service_tags = {t.lower() for t in entry["Service"]["Tags"]}
            if any(t not in service_tags for t in tags):
                continue
            if any(entry["Node"]["Meta"].get(k) != v for k, v in meta):
                continue
            if passing and any(c["Status"] != "passing" for c in entry["Checks"]):
                continue
            if predicate is not None and not predicate(entry):
                continue
            result.append(entry)
        return 200, json.dumps(result).encode(), headers

    def _catalog_rows(
        self, name: str | None, params: Mapping[str, list[str]], token: str | None
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Rows of ``name`` (None: all) a catalog read returns, and its headers."""
        predicate = _parse_filter(params)
        self.consul.authorize_read(token, name)
        self._blocking(name, params)
        state = self.consul.state
        with state.cond:
            rows = state.catalog_rows(name) if not _peer(params) else []
        visible = [r for r in rows if self.consul.can_read(token, r["ServiceName"])]
        headers = self._headers(name, params, token, len(visible) != len(rows))
        tags = [t.lower() for t in params.get("tag", [])]
        meta = _node_meta(params)
        result = [
            row
            for row in visible
            if all(t in {x.lower() for x in row["ServiceTags"]} for t in tags)
            and all(row["NodeMeta"].get(k) == v for k, v in meta)
            and (predicate is None or predicate(row))
        ]
        return result, headers

    def _catalog_service(
        self, path: str, name: str, params: Mapping[str, list[str]], token: str | None, _: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        rows, headers = self._catalog_rows(name, params, token)
        return 200, json.dumps(rows).encode(), headers

    def _catalog_services(
        self, path: str, _: str, params: Mapping[str, list[str]], token: str | None, __: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        rows, headers = self._catalog_rows(None, params, token)
        services: dict[str, list[str]] = {}
        for row in rows:
            tags = services.setdefault(row["ServiceName"], [])
            tags.extend(t for t in row["ServiceTags"] if t not in tags)
        return 200, json.dumps(services).encode(), headers


def blocking_options(
    params: Mapping[str, list[str]], rng: random.Random | None = None
) -> tuple[int, float]:
    """``(index, seconds to hold)`` as Consul reads them: no index or 0 answers at once; a
    missing or non-positive wait is 5 min, above 10 min is clamped, plus up to wait/16."""
    wait = DEFAULT_WAIT
    if "wait" in params:
        try:
            wait = parse_go_duration(params["wait"][0])
        except ValueError:
            raise ConsulHTTPError(400, "Invalid wait time") from None
        if wait <= 0:
            wait = DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
    index = 0
    if "index" in params:
        text = params["index"][0]
        if not text.isdigit():
            raise ConsulHTTPError(400, "Invalid index")
        index = int(text)
    return index, wait + (rng or random).uniform(0, wait / 16)


def _parse_passing(params: Mapping[str, list[str]]) -> bool:
    if "passing" not in params:
        return False
    value = params["passing"][0]
    if value == "" or value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConsulHTTPError(400, "Invalid value for ?passing")


def _peer(params: Mapping[str, list[str]]) -> bool:
    """A ``peer`` is named: this agent has no cluster peerings, so every peer is unknown and
    its imported services are none (Consul answers ``[]``)."""
    return bool(params.get("peer", [""])[0])


def _node_meta(params: Mapping[str, list[str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, _, v in (m.partition(":") for m in params.get("node-meta", []))]


def _parse_filter(params: Mapping[str, list[str]]) -> Any:
    text = params.get("filter", [""])[0]
    if not text:
        return None
    try:
        return compile_filter(text)
    except FilterError as exc:
        raise ConsulHTTPError(
            400, f"Failed to create boolean expression evaluator: {exc}"
        ) from None


class _Abort(Exception):
    """The server went down while a blocking query waited: drop the connection unanswered."""
