"""The two object kinds a service's endpoints can be read from, and how to ask for them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lbclient._instance import ServiceInstance
from lbclient.kubernetes._objects import Selection, endpoints_instances, slice_instances

SERVICE_LABEL = "kubernetes.io/service-name"


@dataclasses.dataclass(frozen=True)
class Kind:
    resource: str
    """The name RBAC and error messages use."""
    api: str
    """The class in ``kubernetes.client`` (and ``kubernetes.aio.client``) that lists it."""
    method: str
    convert: Callable[[Selection, Iterable[Mapping[str, Any]]], tuple[ServiceInstance, ...]]
    selector: Callable[[str], dict[str, str]]
    """The list/watch query that selects one service's objects."""
    every_service: dict[str, str]
    """The list/watch query that selects the objects of every service of a namespace."""
    service_of: Callable[[Mapping[str, Any]], str | None]
    """The service an object belongs to (None: not a service's)."""


def _label_of(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    service = labels.get(SERVICE_LABEL) if isinstance(labels, Mapping) else None
    return service if isinstance(service, str) else None


def _name_of(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else None


ENDPOINT_SLICES = Kind(
    resource="endpointslices.discovery.k8s.io",
    api="DiscoveryV1Api",
    method="list_namespaced_endpoint_slice",
    convert=slice_instances,
    selector=lambda service: {"label_selector": f"{SERVICE_LABEL}={service}"},
    every_service={"label_selector": SERVICE_LABEL},
    service_of=_label_of,
)

ENDPOINTS = Kind(
    resource="endpoints",
    api="CoreV1Api",
    method="list_namespaced_endpoints",
    convert=endpoints_instances,
    selector=lambda service: {"field_selector": f"metadata.name={service}"},
    every_service={},
    service_of=_name_of,
)
