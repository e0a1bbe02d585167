"""The HTTP face of ConsulTestServer: routing, query parsing, body decoding, ACLs, headers.

Written from Consul's API docs and agent/http.go: see reference/consul.md. Keys of request
bodies are accepted in any case and in snake_case, as Consul's TranslateKeys does.
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
from lbclient.testing._consul_state import ConsulHTTPError, parse_ttl
from lbclient.testing._server import ProtocolHandler

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


_ADDRESS_KEYS = {"address": "Address", "port": "Port"}
_LOCALITY_KEYS = {"region": "Region", "zone": "Zone"}
_CONNECT_KEYS = {"native": "Native", "sidecarservice": "SidecarService"}
_PROXY_KEYS = {
    k.lower(): k
    for k in (
        "DestinationServiceName", "DestinationServiceID", "LocalServiceAddress",
        "LocalServicePort", "LocalServiceSocketPath", "Mode", "TransparentProxy", "Config",
        "Upstreams", "MeshGateway", "Expose", "AccessLogs", "EnvoyExtensions",
    )
}  # fmt: skip
_UPSTREAM_KEYS = {
    k.lower(): k
    for k in (
        "DestinationType", "DestinationNamespace", "DestinationPartition", "DestinationPeer",
        "DestinationName", "Datacenter", "LocalBindAddress", "LocalBindPort",
        "LocalBindSocketPath", "LocalBindSocketMode", "Config", "MeshGateway",
        "CentrallyConfigured",
    )
}  # fmt: skip
_EXPOSE_PATH_KEYS = {
    k.lower(): k for k in ("ListenerPort", "Path", "LocalPathPort", "Protocol", "ParsedFromCheck")
}


def _canonical_proxy(raw: Any) -> dict[str, Any]:
    """A Proxy block with Consul's key names; ``Config`` maps are opaque and kept as given."""
    proxy = _canonical(_mapping(raw, "Proxy"), _PROXY_KEYS)
    if "Upstreams" in proxy:
        proxy["Upstreams"] = [
            _nested(_canonical(_mapping(u, "Upstreams"), _UPSTREAM_KEYS))
            for u in proxy["Upstreams"] or []
        ]
    return {"Mode": "", "MeshGateway": {}, "Expose": {}, **_nested(proxy)}


def _nested(block: dict[str, Any]) -> dict[str, Any]:
    if "MeshGateway" in block:
        block["MeshGateway"] = _canonical(_mapping(block["MeshGateway"], "MeshGateway"),
                                          {"mode": "Mode"})  # fmt: skip
    if "TransparentProxy" in block:
        block["TransparentProxy"] = _canonical(
            _mapping(block["TransparentProxy"], "TransparentProxy"),
            {"outboundlistenerport": "OutboundListenerPort", "dialeddirectly": "DialedDirectly"},
        )
    if "Expose" in block:
        expose = _canonical(
            _mapping(block["Expose"], "Expose"), {"checks": "Checks", "paths": "Paths"}
        )
        if "Paths" in expose:
            expose["Paths"] = [
                _canonical(_mapping(p, "Expose.Paths"), _EXPOSE_PATH_KEYS)
                for p in expose["Paths"] or []
            ]
        block["Expose"] = expose
    return block


def _mapping(raw: Any, what: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConsulHTTPError(400, f"Request decode failed: {what}: expected a map")
    return raw


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
            raise ConsulHTTPError(404, "404 page not found")
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
                    f'Invalid header: "{header}" - {feature} are a Consul Enterprise feature',
                )
            if params.get(param, [""])[0]:
                raise ConsulHTTPError(
                    400,
                    f'Invalid query parameter: "{param}" - {feature} are a Consul Enterprise '
                    "feature",
                )
        result: tuple[int, bytes | None, dict[str, str]] = handler(
            path, argument, params, self._token(params), body
        )
        return result

    def _token(self, params: Mapping[str, list[str]]) -> str | None:
        token = self.headers.get("X-Consul-Token")
        auth = self.headers.get("Authorization", "")
        if not token and auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        if not token and params.get("token"):
            token = params["token"][0]
        return token or None

    # -- writes -----------------------------------------------------------------------------

    def _register(
        self, path: str, _: str, params: Mapping[str, list[str]], token: str | None, body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        service, checks = self._decode_registration(body)
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
            update = _canonical(self._json(body, {}), {"status": "Status", "output": "Output"})
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

    # -- decoding ---------------------------------------------------------------------------

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
        tagged = _mapping(spec.get("TaggedAddresses"), "TaggedAddresses")
        service = {
            "ID": spec.get("ID") or name,
            "Service": name,
            "Tags": list(spec.get("Tags") or []),
            "Address": spec.get("Address") or "",
            "Port": port,
            "Meta": dict(spec.get("Meta") or {}),
            "Weights": {"Passing": weights.get("Passing", 1), "Warning": weights.get("Warning", 1)},
            "TaggedAddresses": {
                key: _canonical(_mapping(value, f"TaggedAddresses.{key}"), _ADDRESS_KEYS)
                for key, value in tagged.items()
            },
            "EnableTagOverride": bool(spec.get("EnableTagOverride", False)),
            "Kind": spec.get("Kind") or "",
            "Proxy": _canonical_proxy(spec.get("Proxy")),
            "Connect": _canonical(_mapping(spec.get("Connect"), "Connect"), _CONNECT_KEYS),
        }
        if spec.get("Locality"):
            service["Locality"] = _canonical(_mapping(spec["Locality"], "Locality"), _LOCALITY_KEYS)
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
