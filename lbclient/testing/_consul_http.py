"""The HTTP face of ConsulTestServer: routing, query parsing, body decoding, ACLs, headers.

Written from Consul's API docs and agent/http.go: see reference/consul.md. Keys of request
bodies are accepted in any case and in snake_case, as Consul's TranslateKeys does.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from lbclient.consul._duration import parse_go_duration
from lbclient.testing._consul_bexpr import FilterError, compile_filter
from lbclient.testing._consul_state import ConsulHTTPError, parse_ttl

if TYPE_CHECKING:
    from lbclient.testing.consul import ConsulTestServer

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}

_SERVICE_KEYS = {
    k.lower(): k
    for k in (
        "Name", "ID", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "Kind", "Weights",
        "EnableTagOverride", "Check", "Checks", "Proxy", "Connect", "SocketPath", "Locality",
    )
}  # fmt: skip
_CHECK_KEYS = {
    k.lower(): k
    for k in (
        "CheckID", "ID", "Name", "TTL", "HTTP", "Method", "Header", "Body", "TCP", "GRPC",
        "GRPCUseTLS", "Interval", "Timeout", "Status", "Notes", "DeregisterCriticalServiceAfter",
        "SuccessBeforePassing", "FailuresBeforeCritical", "Args", "ScriptArgs", "DockerContainerID",
        "Shell", "TLSSkipVerify", "TLSServerName", "H2PING", "UDP", "OSService", "ServiceID",
    )
}  # fmt: skip


def _canonical(body: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        name = keys.get(str(key).replace("_", "").lower())
        if name is not None:
            out[name] = value
    return out


class ConsulHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive without the 40 ms Nagle/delayed-ACK stall
    server: Any  # a ThreadingHTTPServer with a ``consul`` attribute

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def setup(self) -> None:
        super().setup()
        self.consul.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.consul.track(self.connection, add=False)

    @property
    def consul(self) -> ConsulTestServer:
        return self.server.consul  # type: ignore[no-any-return]

    def _serve(self) -> None:
        consul = self.consul
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
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
            self._send(exc.status, exc.text.encode(), "text/plain; charset=utf-8")
            return
        except _Abort:
            self.close_connection = True
            return
        if payload is not None and consul.take_malformed() is not None:
            payload = consul.malformed_body
        self._send(status, payload or b"", "application/json", headers)

    do_GET = do_PUT = do_POST = do_DELETE = _serve

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
        # one write per answer: no Nagle stall, and a down() mid-answer cannot split it
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        self.log_request(status)

    # -- routing ----------------------------------------------------------------------------

    def _route(
        self, path: str, query: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        method = self.command
        params: dict[str, list[str]] = {}
        for key, value in query:
            params.setdefault(key, []).append(value)
        token = self._token(params)
        reads = {
            "/v1/health/service/": self._health_service,
            "/v1/catalog/service/": self._catalog_service,
        }
        for prefix, read in reads.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                self._allow(method, "GET")
                return read(path[len(prefix) :], params, token)
        if path == "/v1/catalog/services":
            self._allow(method, "GET")
            return self._catalog_services(params, token)
        agent = self.consul.state
        if path == "/v1/agent/service/register":
            self._allow(method, "PUT")
            service, checks = self._decode_registration(body)
            self.consul.authorize(token, "write", service["Service"])
            agent.register(service, checks, "replace-existing-checks" in params)
            return 200, None, {}
        if path.startswith("/v1/agent/service/deregister/"):
            self._allow(method, "PUT")
            sid = path.rsplit("/", 1)[1]
            self.consul.authorize(token, "write", self.consul.service_name_of(sid))
            agent.deregister(sid)
            return 200, None, {}
        for action, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
            prefix = f"/v1/agent/check/{action}/"
            if path.startswith(prefix):
                self._allow(method, "PUT")
                cid = path[len(prefix) :]
                self.consul.authorize(token, "write", self.consul.service_name_of_check(cid))
                agent.update_check(cid, status, params.get("note", [""])[0])
                return 200, None, {}
        if path.startswith("/v1/agent/check/update/"):
            self._allow(method, "PUT")
            cid = path[len("/v1/agent/check/update/") :]
            update = _canonical(self._json(body, {}), {"status": "Status", "output": "Output"})
            status = update.get("Status", "")
            if status not in ("passing", "warning", "critical"):
                raise ConsulHTTPError(400, f'Invalid check status: "{status}"')
            self.consul.authorize(token, "write", self.consul.service_name_of_check(cid))
            agent.update_check(cid, status, str(update.get("Output", "")))
            return 200, None, {}
        raise ConsulHTTPError(404, "404 page not found")

    def _allow(self, method: str, expected: str) -> None:
        if method != expected:
            raise ConsulHTTPError(405, f"method {method} not allowed")

    def _token(self, params: Mapping[str, list[str]]) -> str | None:
        token = self.headers.get("X-Consul-Token")
        auth = self.headers.get("Authorization", "")
        if not token and auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        if not token and params.get("token"):
            token = params["token"][0]
        return token or None

    # -- reads ------------------------------------------------------------------------------

    def _blocking(self, name: str | None, params: Mapping[str, list[str]]) -> None:
        """Validate the query options, then wait as a blocking query would."""
        for flag in ("stale", "cached"):
            if flag in params and "consistent" in params:
                raise ConsulHTTPError(
                    400, f"Cannot specify ?{flag} with ?consistent, conflicting semantics."
                )
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

    def _headers(self, name: str | None, filtered: bool) -> dict[str, str]:
        headers = {
            "X-Consul-Index": str(self.consul.state.index_of(name)),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": "leader",
        }
        if filtered:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return headers

    def _health_service(
        self, name: str, params: Mapping[str, list[str]], token: str | None
    ) -> tuple[int, bytes | None, dict[str, str]]:
        passing = _parse_passing(params)
        predicate = _parse_filter(params)
        readable = self.consul.authorize_read(token, name)
        self._blocking(name, params)
        state = self.consul.state
        with state.cond:
            entries = state.health_entries(name) if readable else []
            headers = self._headers(name, not readable)
        tags = [t.lower() for t in params.get("tag", [])]
        meta = [m.partition(":")[::2] for m in params.get("node-meta", [])]
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

    def _catalog_service(
        self, name: str, params: Mapping[str, list[str]], token: str | None
    ) -> tuple[int, bytes | None, dict[str, str]]:
        readable = self.consul.authorize_read(token, name)
        self._blocking(name, params)
        state = self.consul.state
        with state.cond:
            rows = state.catalog_service(name) if readable else []
            headers = self._headers(name, not readable)
        tags = [t.lower() for t in params.get("tag", [])]
        rows = [r for r in rows if all(t in {x.lower() for x in r["ServiceTags"]} for t in tags)]
        return 200, json.dumps(rows).encode(), headers

    def _catalog_services(
        self, params: Mapping[str, list[str]], token: str | None
    ) -> tuple[int, bytes | None, dict[str, str]]:
        self.consul.authorize_read(token, None)
        self._blocking(None, params)
        state = self.consul.state
        with state.cond:
            services = state.catalog_services()
        visible = {n: t for n, t in services.items() if self.consul.can_read(token, n)}
        headers = self._headers(None, len(visible) != len(services))
        return 200, json.dumps(visible).encode(), headers

    # -- writes -----------------------------------------------------------------------------

    def _json(self, body: bytes, default: Any) -> Any:
        if not body.strip():
            return default
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ConsulHTTPError(400, f"Request decode failed: {exc}") from None

    def _decode_registration(self, body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        raw = self._json(body, None)
        if not isinstance(raw, dict):
            raise ConsulHTTPError(400, "Request decode failed: expected a JSON object")
        spec = _canonical(raw, _SERVICE_KEYS)
        name = spec.get("Name")
        if not isinstance(name, str) or not name:
            raise ConsulHTTPError(400, "Missing service name")
        port = spec.get("Port", 0)
        if isinstance(port, bool) or not isinstance(port, int):
            raise ConsulHTTPError(400, "Request decode failed: Port must be an integer")
        weights = _canonical(
            spec.get("Weights") or {}, {"passing": "Passing", "warning": "Warning"}
        )
        service = {
            "ID": spec.get("ID") or name,
            "Service": name,
            "Tags": list(spec.get("Tags") or []),
            "Address": spec.get("Address") or "",
            "Port": port,
            "Meta": dict(spec.get("Meta") or {}),
            "Weights": {"Passing": weights.get("Passing", 1), "Warning": weights.get("Warning", 1)},
            "TaggedAddresses": dict(spec.get("TaggedAddresses") or {}),
            "EnableTagOverride": bool(spec.get("EnableTagOverride", False)),
            "Kind": spec.get("Kind") or "",
        }
        raw_checks = ([spec["Check"]] if spec.get("Check") else []) + list(spec.get("Checks") or [])
        return service, [_decode_check(c) for c in raw_checks]


_RUN_KINDS = ("HTTP", "TCP", "GRPC", "H2PING", "UDP", "Args", "ScriptArgs")
"""Checks the agent would run itself; stored with their status, never run here."""


def _decode_check(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConsulHTTPError(400, "Request decode failed: a check must be a JSON object")
    check = _canonical(raw, _CHECK_KEYS)
    if "ID" in check and "CheckID" not in check:
        check["CheckID"] = check.pop("ID")
    if check.get("TTL") is not None:
        check["TTL"] = parse_ttl(check["TTL"], "TTL")
        if check["TTL"] <= 0:
            raise ConsulHTTPError(400, "Invalid check: TTL must be > 0 for TTL checks")
        check["Type"] = "ttl"
    elif kind := next((k for k in _RUN_KINDS if check.get(k)), None):
        if not check.get("Interval"):
            raise ConsulHTTPError(400, "Invalid check: Interval is required")
        check["Type"] = "script" if kind in ("Args", "ScriptArgs") else kind.lower()
    else:
        raise ConsulHTTPError(
            400, "Invalid check: TTL must be > 0 for TTL checks, or give HTTP/TCP/GRPC/Args"
        )
    if check.get("DeregisterCriticalServiceAfter") is not None:
        check["DeregisterCriticalServiceAfter"] = parse_ttl(
            check["DeregisterCriticalServiceAfter"], "DeregisterCriticalServiceAfter"
        )
    return check


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
