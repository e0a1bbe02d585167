"""Export lbclient's metrics to Prometheus while one instance fails, then read the scrape.

    python examples/prometheus_metrics.py

Starts two real HTTP servers on loopback (lbclient.testing.HTTPBackend), one answering 503:
its failures are retried on the other and it gets ejected. The metrics are served on a real
/metrics endpoint (prometheus_client's start_http_server) and printed from a scrape.
"""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, start_http_server

import lbclient
from lbclient.metrics import PrometheusMetrics
from lbclient.testing import HTTPBackend


def main() -> None:
    registry = CollectorRegistry()  # your app would keep prometheus_client's default REGISTRY
    metrics = PrometheusMetrics(registry)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    with HTTPBackend("orders-a") as a, HTTPBackend("orders-b") as b:
        b.status = 503
        lb = lbclient.LoadBalancer(
            {"orders": [a.address, b.address]},
            outlier=lbclient.OutlierDetection(consecutive_5xx=3),
            listeners=[metrics],
        )
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
            statuses = {client.get("http://orders/items").status_code for _ in range(20)}
        print(f"20 requests, answered with {statuses} thanks to retries")
        scrape = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics").text
        lb.close()
    server.shutdown()
    shown = ("lbclient_requests_total", "lbclient_retries_total", "lbclient_ejections_total",
             "lbclient_instances{")  # fmt: skip
    for line in scrape.splitlines():
        if line.startswith(shown):
            print(line)


if __name__ == "__main__":
    main()
