"""Kubernetes topology hints (``hints.forZones``) honoured when the caller's zone is known,
as kube-proxy does: only when every endpoint has a hint and one names the caller's zone."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import httpx
from k8s_support import NS, wait_for

import lbclient
from lbclient.kubernetes import KubernetesRegistry
from lbclient.testing import HTTPBackend
from lbclient.testing.kubernetes import KubernetesTestServer, endpoint


def publish(
    api: KubernetesTestServer, backends: list[HTTPBackend], layout: Sequence[tuple[str, Any]]
) -> None:
    """One slice per backend: ``(zone, hints)`` for each."""
    for i, (backend, (zone, hints)) in enumerate(zip(backends, layout, strict=False)):
        api.apply_slice(
            NS,
            "orders",
            f"orders-{i}",
            endpoints=[endpoint(backend.host, zone=zone, hints=hints, pod=f"orders-{i}")],
            ports=[{"name": "http", "port": backend.port}],
        )


def traffic(lb: lbclient.LoadBalancer, count: int = 12) -> collections.Counter[str]:
    with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
        return collections.Counter(
            client.get("http://orders/").json()["backend"] for _ in range(count)
        )


def test_hints_assign_endpoints_across_zones(
    api: KubernetesTestServer, configuration: Any, backends: list[HTTPBackend]
) -> None:
    # b sits in z2 but the controller assigned it to z1 (z1 has more callers).
    publish(api, backends, [("z1", ["z1"]), ("z2", ["z1"]), ("z2", ["z2"])])
    registry = KubernetesRegistry(NS, port="http", configuration=configuration)
    with lbclient.LoadBalancer(registry, zone="z1") as lb:
        wait_for(lambda: len(lb.service("orders").endpoints) == 3)
        assert traffic(lb) == {"a": 6, "b": 6}
    registry = KubernetesRegistry(NS, port="http", configuration=configuration)
    with lbclient.LoadBalancer(registry, zone="z2") as lb:
        wait_for(lambda: len(lb.service("orders").endpoints) == 3)
        assert traffic(lb) == {"c": 12}


def test_one_endpoint_without_a_hint_turns_hints_off(
    api: KubernetesTestServer, configuration: Any, backends: list[HTTPBackend]
) -> None:
    publish(api, backends, [("z1", ["z1"]), ("z2", ["z1"]), ("z2", ())])
    registry = KubernetesRegistry(NS, port="http", configuration=configuration)
    with lbclient.LoadBalancer(registry, zone="z1") as lb:
        wait_for(lambda: len(lb.service("orders").endpoints) == 3)
        assert traffic(lb) == {"a": 12}  # back to plain zone preference
    registry = KubernetesRegistry(NS, port="http", configuration=configuration)
    with lbclient.LoadBalancer(registry) as lb:  # no caller zone: hints unused
        wait_for(lambda: len(lb.service("orders").endpoints) == 3)
        assert traffic(lb) == {"a": 4, "b": 4, "c": 4}
