"""Two instances of a service register themselves in Consul; a client balances between them.

    python examples/consul_two_services.py            # starts a ConsulTestServer on loopback
    CONSUL_HTTP_ADDR=127.0.0.1:8500 python examples/consul_two_services.py   # a real agent

Each instance is an HTTP server with a ConsulRegistrar: registered with a TTL check, kept
passing every ttl/3, deregistered when it stops. The client finds them through
ConsulRegistry (blocking queries) and spreads requests over both; when one instance
leaves, the next requests all go to the other.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator

import httpx

import lbclient
from lbclient.testing import HTTPBackend
from lbclient.testing.consul import ConsulTestServer


@contextlib.contextmanager
def consul_agent() -> Iterator[int | None]:
    """A real agent from CONSUL_HTTP_ADDR, or a ConsulTestServer on a free port."""
    if os.environ.get("CONSUL_HTTP_ADDR"):
        yield None  # ConsulRegistry and ConsulRegistrar read the environment
        return
    with ConsulTestServer() as server:
        yield server.port


def main() -> None:
    with consul_agent() as port, HTTPBackend("orders-1") as one, HTTPBackend("orders-2") as two:
        registrars = [
            lbclient.ConsulRegistrar(
                "orders", backend.port, service_id=backend.name, address="127.0.0.1",
                consul_port=port, ttl="10s", deregister_critical_after="1m", tags=["v1"],
            )
            for backend in (one, two)
        ]  # fmt: skip
        with registrars[0], registrars[1]:
            lb = lbclient.LoadBalancer(
                lbclient.ConsulRegistry(port=port, tags=["v1"]), scheduler="round_robin"
            )
            with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
                counts = Counter(client.get("http://orders/").json()["backend"] for _ in range(20))
                print("both registered:", dict(sorted(counts.items())))

                registrars[1].close()  # orders-2 leaves: deregistered at once
                started = time.monotonic()
                while len(lb.stats("orders")["instances"]) != 1:
                    time.sleep(0.005)
                print(f"orders-2 left; the balancer saw it in {time.monotonic() - started:.3f}s")
                counts = Counter(client.get("http://orders/").json()["backend"] for _ in range(10))
                print("after orders-2 left:", dict(sorted(counts.items())))
            lb.close()


if __name__ == "__main__":
    main()
