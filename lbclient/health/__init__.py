"""Active health checks (HTTP, TCP, gRPC) and the background timer they run on.

``LoadBalancer(registry, health_check=HttpHealthCheck("/health"))`` turns them on; see
``lbclient.filters.HealthCheckFilter`` for how their verdicts reach the usable list.
"""

from lbclient.health._checks import (
    HealthCheck,
    HttpHealthCheck,
    Prober,
    ProbeResult,
    TcpHealthCheck,
)
from lbclient.health._grpc import GrpcHealthCheck

__all__ = [
    "GrpcHealthCheck",
    "HealthCheck",
    "HttpHealthCheck",
    "ProbeResult",
    "Prober",
    "TcpHealthCheck",
]
