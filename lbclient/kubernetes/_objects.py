"""From Kubernetes objects (raw JSON dicts) to ServiceInstances. No I/O.

EndpointSlice conditions follow discovery/v1 types.go: ``ready`` null means ready, ``serving``
null means "same as ready", ``terminating`` null means not terminating. An endpoint is used when
ready and not terminating. With ``fallback_to_terminating``, endpoints that are terminating but
still serving are used only when no endpoint of the whole service is ready (kube-proxy does the
same for graceful drains). Only the first address of an endpoint is used: the API says they are
fungible and consumers may take the first.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lbclient._address import show
from lbclient._answer import AnswerReader, Instances, share
from lbclient._exceptions import ConfigurationError
from lbclient._instance import ServiceInstance
from lbclient.filters.zone import HINTS_KEY

log = logging.getLogger("lbclient.kubernetes")

Port = str | int | None
"""A port by name (``"http"``), by number (the endpoint's port, ``8080``), or None: the only one."""

_SCHEMES = {"http": "http", "https": "https", "kubernetes.io/h2c": "http", "grpc": "grpc"}


@dataclasses.dataclass(frozen=True)
class Selection:
    """What to take from a service's objects."""

    service: str
    port: Port = None
    fallback_to_terminating: bool = False


def pick_port(
    selection: Selection, ports: Sequence[Mapping[str, Any]] | None, where: str
) -> Mapping[str, Any] | None:
    """The port entry to use from ``ports``; None when this object does not carry it."""
    if not ports:
        return None
    wanted = selection.port
    if wanted is None:
        if len(ports) == 1:
            return ports[0]
        names = ", ".join(str(p.get("name") or p.get("port")) for p in ports)
        raise ConfigurationError(
            f"service {selection.service!r} has several ports ({names}) in {where}; "
            "choose one with port='<name>' or port=<number>",
            service=selection.service,
        )
    if isinstance(wanted, str) and wanted.isdigit():
        wanted = int(wanted)
    key = "port" if isinstance(wanted, int) else "name"
    for entry in ports:
        if entry.get(key) == wanted:
            return entry
    return None


def _scheme(port: Mapping[str, Any]) -> str | None:
    return _SCHEMES.get(str(port.get("appProtocol") or "").lower())


def _instance(
    selection: Selection,
    host: Any,
    port: Mapping[str, Any],
    zone: Any,
    metadata: dict[str, Any],
) -> ServiceInstance:
    if not isinstance(host, str):
        raise TypeError(f"address {show(host)} is not a string")
    return ServiceInstance(
        selection.service,
        host,
        _port_number(port),
        zone=_optional_string(zone, "zone") and share(zone),
        metadata={k: share(text) for k, v in metadata.items() if (text := _optional_string(v, k))},
        scheme=_scheme(port),
    )


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} {show(value)} is not an object")
    return value


def _optional_object(value: Any, what: str) -> Mapping[str, Any]:
    return {} if value is None else _object(value, what)


def _list(value: Any, what: str) -> list[Any]:
    """A JSON array, or empty for null/absent (``"x"`` is not a list of one-letter items)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{what} {show(value)} is not an array")
    return value


def _optional_string(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{what} {show(value)} is not a string")


def _port_number(port: Mapping[str, Any]) -> int:
    number = port.get("port")
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError(f"port {show(number)} is not an integer")
    return number


def _ports(value: Any) -> list[Mapping[str, Any]]:
    return [_object(p, "port") for p in _list(value, "ports")]


def _name(obj: Any, kind: str, position: int) -> tuple[Mapping[str, Any], str]:
    """The object's metadata and ``"Kind name"``; raises when it has no usable name."""
    meta = _object(_object(obj, kind).get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str):
        raise TypeError(f"metadata.name {show(name)} of {kind} #{position} is not a string")
    return meta, f"{kind} {name}"


def slice_instances(selection: Selection, slices: Iterable[Mapping[str, Any]]) -> Instances:
    """Merge every EndpointSlice of a service into one list (duplicates across slices once).

    A malformed slice or endpoint is skipped (and counted), the others apply.
    """
    reader = AnswerReader(selection.service, "Kubernetes")
    ready: dict[str, ServiceInstance] = {}
    draining: dict[str, ServiceInstance] = {}
    ports_seen: list[str] = []
    matched = False
    for position, obj in enumerate(slices):
        checked = reader.attempt(f"EndpointSlice #{position}", _slice, obj, position)
        if checked is None:
            continue
        meta, label, endpoints, ports = checked
        port = pick_port(selection, ports, label)
        ports_seen += [str(p.get("name") or p.get("port")) for p in ports]
        if port is None:
            continue
        matched = True
        for index, endpoint in enumerate(endpoints):
            found = reader.attempt(
                f"{label} endpoint #{index}",
                _slice_endpoint,
                selection,
                obj,
                meta,
                label,
                endpoint,
                port,
            )
            if found is not None:
                usable, instance = found
                (ready if usable else draining).setdefault(instance.id, instance)
    _check_port(selection, matched, ports_seen)
    chosen = ready or draining
    return reader.result(chosen[key] for key in sorted(chosen))


def _slice(
    obj: Any, position: int
) -> tuple[Mapping[str, Any], str, list[Any], list[Mapping[str, Any]]]:
    meta, label = _name(obj, "EndpointSlice", position)
    return meta, label, _list(obj.get("endpoints"), "endpoints"), _ports(obj.get("ports"))


def _slice_endpoint(
    selection: Selection,
    obj: Mapping[str, Any],
    meta: Mapping[str, Any],
    label: str,
    endpoint: Any,
    port: Mapping[str, Any],
) -> tuple[bool, ServiceInstance] | None:
    """``(usable, instance)`` of one endpoint, None when its conditions leave it out."""
    endpoint = _object(endpoint, "endpoint")
    addresses = _list(endpoint.get("addresses"), "addresses")
    if not addresses:
        return None
    conditions = _optional_object(endpoint.get("conditions"), "conditions")
    is_ready = conditions.get("ready") is not False
    serving = conditions.get("serving")
    is_serving = is_ready if serving is None else bool(serving)
    terminating = bool(conditions.get("terminating"))
    usable = is_ready and not terminating
    if not usable and not (selection.fallback_to_terminating and terminating and is_serving):
        return None
    target = _optional_object(endpoint.get("targetRef"), "targetRef")
    instance = _instance(
        selection,
        addresses[0],
        port,
        endpoint.get("zone"),
        {
            "node": endpoint.get("nodeName"),
            "pod": target.get("name"),
            "namespace": target.get("namespace") or meta.get("namespace"),
            "hostname": endpoint.get("hostname"),
            "slice": label.partition(" ")[2],
            "address_type": obj.get("addressType"),
            "app_protocol": port.get("appProtocol"),
            "terminating": "true" if terminating else "",
            HINTS_KEY: _zone_hints(endpoint.get("hints")),
        },
    )
    return usable, instance


def _zone_hints(hints: Any) -> str | None:
    """``hints.forZones[].name`` joined by commas; None when absent or not as the API
    defines it (a malformed hint is no hint: kube-proxy then uses every endpoint)."""
    if not isinstance(hints, Mapping):
        return None
    zones = hints.get("forZones")
    if not isinstance(zones, list):
        return None
    names = [z.get("name") if isinstance(z, Mapping) else None for z in zones]
    valid = [n for n in names if isinstance(n, str) and n and "," not in n]
    return ",".join(valid) if valid and len(valid) == len(names) else None


def endpoints_instances(selection: Selection, objects: Iterable[Mapping[str, Any]]) -> Instances:
    """The ready addresses of legacy core/v1 Endpoints (``notReadyAddresses`` are skipped).

    A malformed object, subset or address is skipped (and counted), the others apply.
    """
    reader = AnswerReader(selection.service, "Kubernetes")
    found: dict[str, ServiceInstance] = {}
    ports_seen: list[str] = []
    matched = False
    for position, obj in enumerate(objects):
        checked = reader.attempt(f"Endpoints #{position}", _endpoints, obj, position)
        if checked is None:
            continue
        meta, label, subsets = checked
        for number, subset in enumerate(subsets):
            where = f"{label} subset #{number}"
            parts = reader.attempt(where, _subset, subset)
            if parts is None:
                continue
            addresses, ports = parts
            port = pick_port(selection, ports, label)
            ports_seen += [str(p.get("name") or p.get("port")) for p in ports]
            if port is None:
                continue
            matched = True
            for index, address in enumerate(addresses):
                instance = reader.attempt(
                    f"{where} address #{index}", _address, selection, meta, address, port
                )
                if instance is not None:
                    found.setdefault(instance.id, instance)
    _check_port(selection, matched, ports_seen)
    return reader.result(found[key] for key in sorted(found))


def _endpoints(obj: Any, position: int) -> tuple[Mapping[str, Any], str, list[Any]]:
    meta, label = _name(obj, "Endpoints", position)
    return meta, label, _list(obj.get("subsets"), "subsets")


def _subset(subset: Any) -> tuple[list[Any], list[Mapping[str, Any]]]:
    subset = _object(subset, "subset")
    return _list(subset.get("addresses"), "addresses"), _ports(subset.get("ports"))


def _address(
    selection: Selection, meta: Mapping[str, Any], address: Any, port: Mapping[str, Any]
) -> ServiceInstance:
    address = _object(address, "address")
    target = _optional_object(address.get("targetRef"), "targetRef")
    return _instance(
        selection,
        address.get("ip"),
        port,
        None,
        {
            "node": address.get("nodeName"),
            "pod": target.get("name"),
            "namespace": target.get("namespace") or meta.get("namespace"),
            "hostname": address.get("hostname"),
            "app_protocol": port.get("appProtocol"),
        },
    )


def _check_port(selection: Selection, matched: bool, ports_seen: list[str]) -> None:
    if not matched and ports_seen and selection.port is not None:
        raise ConfigurationError(
            f"service {selection.service!r} has no port {selection.port!r} "
            f"(its ports: {', '.join(sorted(set(ports_seen)))}); fix the port= setting",
            service=selection.service,
        )
