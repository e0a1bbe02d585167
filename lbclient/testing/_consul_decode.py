"""Request bodies of ConsulTestServer, decoded as Consul's agent decodes them.

Keys are accepted in any case and in snake_case, at every level (Consul's TranslateKeys and
Go's case-insensitive JSON decoding), and come back with Consul's own names:
``{"tagged_addresses": {"lan": {"address": ...}}}`` is served as
``{"TaggedAddresses": {"lan": {"Address": ...}}}``. Opaque maps (``Meta``, ``Proxy.Config``)
are kept as given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lbclient.testing._consul_state import ConsulHTTPError, parse_ttl

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


def canonical(body: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    """The known keys of ``body`` under their canonical names; unknown keys are dropped."""
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
    proxy = canonical(_mapping(raw, "Proxy"), _PROXY_KEYS)
    if "Upstreams" in proxy:
        proxy["Upstreams"] = [
            _nested(canonical(_mapping(u, "Upstreams"), _UPSTREAM_KEYS))
            for u in proxy["Upstreams"] or []
        ]
    return {"Mode": "", "MeshGateway": {}, "Expose": {}, **_nested(proxy)}


def _nested(block: dict[str, Any]) -> dict[str, Any]:
    if "MeshGateway" in block:
        block["MeshGateway"] = canonical(_mapping(block["MeshGateway"], "MeshGateway"),
                                          {"mode": "Mode"})  # fmt: skip
    if "TransparentProxy" in block:
        block["TransparentProxy"] = canonical(
            _mapping(block["TransparentProxy"], "TransparentProxy"),
            {"outboundlistenerport": "OutboundListenerPort", "dialeddirectly": "DialedDirectly"},
        )
    if "Expose" in block:
        expose = canonical(
            _mapping(block["Expose"], "Expose"), {"checks": "Checks", "paths": "Paths"}
        )
        if "Paths" in expose:
            expose["Paths"] = [
                canonical(_mapping(p, "Expose.Paths"), _EXPOSE_PATH_KEYS)
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


def decode_json(body: bytes, default: Any) -> Any:
    """A JSON request body (``default`` when empty), or Consul's 400."""
    if not body.strip():
        return default
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ConsulHTTPError(400, f"Request decode failed: {exc}") from None


def decode_registration(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A service registration: the service as the catalog keeps it, and its checks."""
    raw = decode_json(body, None)
    if not isinstance(raw, dict):
        raise ConsulHTTPError(400, "Request decode failed: expected a JSON object")
    spec = canonical(raw, _SERVICE_KEYS)
    name = spec.get("Name")
    if not isinstance(name, str) or not name:
        raise ConsulHTTPError(400, "Missing service name")
    port = spec.get("Port", 0)
    if isinstance(port, bool) or not isinstance(port, int):
        raise ConsulHTTPError(400, "Request decode failed: Port must be an integer")
    weights = canonical(spec.get("Weights") or {}, {"passing": "Passing", "warning": "Warning"})
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
            key: canonical(_mapping(value, f"TaggedAddresses.{key}"), _ADDRESS_KEYS)
            for key, value in tagged.items()
        },
        "EnableTagOverride": bool(spec.get("EnableTagOverride", False)),
        "Kind": spec.get("Kind") or "",
        "Proxy": _canonical_proxy(spec.get("Proxy")),
        "Connect": canonical(_mapping(spec.get("Connect"), "Connect"), _CONNECT_KEYS),
    }
    if spec.get("Locality"):
        service["Locality"] = canonical(_mapping(spec["Locality"], "Locality"), _LOCALITY_KEYS)
    raw_checks = ([spec["Check"]] if spec.get("Check") else []) + list(spec.get("Checks") or [])
    return service, [_decode_check(c) for c in raw_checks]


_RUN_KINDS = ("HTTP", "TCP", "GRPC", "H2PING", "UDP", "Args", "ScriptArgs")
"""Checks the agent would run itself; stored with their status, never run here."""


def _decode_check(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConsulHTTPError(400, "Request decode failed: a check must be a JSON object")
    check = canonical(raw, _CHECK_KEYS)
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
