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

from lbclient._exceptions import ConfigurationError
from lbclient._instance import ServiceInstance

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
    host: str,
    port: Mapping[str, Any],
    zone: str | None,
    metadata: dict[str, str],
) -> ServiceInstance | None:
    try:
        return ServiceInstance(
            selection.service,
            host,
            int(port["port"]),
            zone=zone or None,
            metadata={k: v for k, v in metadata.items() if v},
            scheme=_scheme(port),
        )
    except (ConfigurationError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: skipping endpoint %r: %s", selection.service, host, exc)
        return None


def slice_instances(
    selection: Selection, slices: Iterable[Mapping[str, Any]]
) -> tuple[ServiceInstance, ...]:
    """Merge every EndpointSlice of a service into one list (duplicates across slices once)."""
    ready: dict[str, ServiceInstance] = {}
    draining: dict[str, ServiceInstance] = {}
    ports_seen: list[str] = []
    matched = False
    for obj in slices:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", "?"))
        endpoints = obj.get("endpoints") or ()
        port = pick_port(selection, obj.get("ports"), f"EndpointSlice {name!r}")
        ports_seen += [str(p.get("name") or p.get("port")) for p in obj.get("ports") or ()]
        if port is None:
            continue
        matched = True
        for endpoint in endpoints:
            addresses = endpoint.get("addresses") or ()
            if not addresses:
                continue
            conditions = endpoint.get("conditions") or {}
            is_ready = conditions.get("ready") is not False
            serving = conditions.get("serving")
            is_serving = is_ready if serving is None else bool(serving)
            terminating = bool(conditions.get("terminating"))
            usable = is_ready and not terminating
            if not usable and not (
                selection.fallback_to_terminating and terminating and is_serving
            ):
                continue
            target = endpoint.get("targetRef") or {}
            instance = _instance(
                selection,
                str(addresses[0]),
                port,
                endpoint.get("zone"),
                {
                    "node": endpoint.get("nodeName") or "",
                    "pod": target.get("name") or "",
                    "namespace": target.get("namespace") or meta.get("namespace") or "",
                    "hostname": endpoint.get("hostname") or "",
                    "slice": name,
                    "address_type": str(obj.get("addressType") or ""),
                    "app_protocol": str(port.get("appProtocol") or ""),
                    "terminating": "true" if terminating else "",
                },
            )
            if instance is not None:
                (ready if usable else draining).setdefault(instance.id, instance)
    _check_port(selection, matched, ports_seen)
    chosen = ready or draining
    return tuple(chosen[key] for key in sorted(chosen))


def endpoints_instances(
    selection: Selection, objects: Iterable[Mapping[str, Any]]
) -> tuple[ServiceInstance, ...]:
    """The ready addresses of legacy core/v1 Endpoints (``notReadyAddresses`` are skipped)."""
    found: dict[str, ServiceInstance] = {}
    ports_seen: list[str] = []
    matched = False
    for obj in objects:
        meta = obj.get("metadata") or {}
        for subset in obj.get("subsets") or ():
            port = pick_port(selection, subset.get("ports"), f"Endpoints {meta.get('name')!r}")
            ports_seen += [str(p.get("name") or p.get("port")) for p in subset.get("ports") or ()]
            if port is None:
                continue
            matched = True
            for address in subset.get("addresses") or ():
                target = address.get("targetRef") or {}
                instance = _instance(
                    selection,
                    str(address.get("ip", "")),
                    port,
                    None,
                    {
                        "node": address.get("nodeName") or "",
                        "pod": target.get("name") or "",
                        "namespace": target.get("namespace") or meta.get("namespace") or "",
                        "hostname": address.get("hostname") or "",
                        "app_protocol": str(port.get("appProtocol") or ""),
                    },
                )
                if instance is not None:
                    found.setdefault(instance.id, instance)
    _check_port(selection, matched, ports_seen)
    return tuple(found[key] for key in sorted(found))


def _check_port(selection: Selection, matched: bool, ports_seen: list[str]) -> None:
    if not matched and ports_seen and selection.port is not None:
        raise ConfigurationError(
            f"service {selection.service!r} has no port {selection.port!r} "
            f"(its ports: {', '.join(sorted(set(ports_seen)))}); fix the port= setting",
            service=selection.service,
        )
