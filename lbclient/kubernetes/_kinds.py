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


ENDPOINT_SLICES = Kind(
    resource="endpointslices.discovery.k8s.io",
    api="DiscoveryV1Api",
    method="list_namespaced_endpoint_slice",
    convert=slice_instances,
    selector=lambda service: {"label_selector": f"{SERVICE_LABEL}={service}"},
)

ENDPOINTS = Kind(
    resource="endpoints",
    api="CoreV1Api",
    method="list_namespaced_endpoints",
    convert=endpoints_instances,
    selector=lambda service: {"field_selector": f"metadata.name={service}"},
)
