"""Deliberate mistakes a type checker must reject: each line marked ``# E: <code>`` must be
reported by ``mypy --strict`` with that error code (tests/typing/test_typing.py checks it).

Never run: each of these would also raise ConfigurationError at run time.
"""

from __future__ import annotations

import lbclient
import lbclient.grpc

registry = lbclient.StaticRegistry({"orders": ["127.0.0.1:8001"]})
lb = lbclient.LoadBalancer(registry)

lbclient.LoadBalancer(registry, schedular="peak_ewma")  # E: call-arg
lbclient.LoadBalancer(registry, retry=3)  # E: arg-type
lbclient.LoadBalancer(registry, subset_size=2.5)  # E: arg-type
lbclient.LoadBalancer(registry, services={"orders": 5})  # E: dict-item
lbclient.LoadBalancer(registry, services={"orders": {"retries": 3}})  # E: dict-item
lbclient.LoadBalancedTransport(lb, host_header=42)  # E: arg-type
lbclient.AsyncLoadBalancedTransport(lb, unknown_service="ignore")  # E: arg-type
lbclient.LoadBalancedTransport(lb, retries=lbclient.NO_RETRY)  # E: call-arg
lbclient.ConsulRegistrar("orders", 8001, tll="10s")  # E: arg-type
lbclient.ConsulRegistry(tgs=["v2"])  # E: arg-type
lbclient.KubernetesRegistry("shop", prot="http")  # E: arg-type
lbclient.grpc.insecure_channel("orders", lb, retry=3)  # E: arg-type
lbclient.grpc.aio.insecure_channel("orders", lb, idempotnt="all")  # E: call-arg
lbclient.RetryPolicy(attempts="3")  # E: arg-type
lbclient.SlowStart(window="30s")  # E: arg-type
