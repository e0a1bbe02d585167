"""Priority levels from Consul's Service.Meta, and failover between them with real traffic."""

from __future__ import annotations

import collections

import httpx
from consul_helpers import wait_until

import lbclient
from lbclient.consul import ConsulRegistry


def test_priority_from_service_meta_and_failover(server, agent, backends):
    a, b = backends
    agent.agent.service.register(
        "orders", service_id="a", address="127.0.0.1", port=a.port,
        check={"TTL": "60s", "Status": "passing", "CheckID": "a-ttl"},
    )  # fmt: skip
    agent.agent.service.register(
        "orders", service_id="b", address="127.0.0.1", port=b.port, meta={"priority": "1"}
    )
    agent.agent.service.register(
        "orders", service_id="bad", address="127.0.0.1", port=1, meta={"priority": "high"}
    )
    agent.agent.service.register(
        "orders", service_id="tier", address="127.0.0.1", port=2, meta={"tier": "3"}
    )
    registry = ConsulRegistry(port=server.port)
    found = {i.id: i.priority for i in registry.resolve("orders")}
    assert found == {"a": 0, "b": 1, "tier": 0}  # "high" is skipped as malformed
    registry.close()
    by_tier = ConsulRegistry(port=server.port, priority_key="tier")
    assert {i.id: i.priority for i in by_tier.resolve("orders")}["tier"] == 3
    by_tier.close()
    for gone in ("bad", "tier"):
        agent.agent.service.deregister(gone)

    lb = lbclient.LoadBalancer(ConsulRegistry(port=server.port))
    with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
        seen = collections.Counter(
            client.get("http://orders/").json()["backend"] for _ in range(10)
        )
        assert seen == {"a": 10}  # priority 0 healthy: all of it
        agent.agent.check.ttl_fail("a-ttl")  # a goes critical: Consul drops it
        wait_until(lambda: [r["id"] for r in lb.stats("orders")["instances"]] == ["b"])
        seen = collections.Counter(
            client.get("http://orders/").json()["backend"] for _ in range(10)
        )
        assert seen == {"b": 10}
    lb.close()
