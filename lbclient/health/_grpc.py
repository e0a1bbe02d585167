"""GrpcHealthCheck: the standard ``grpc.health.v1.Health/Check`` probe (needs the [grpc] extra).

Follows gRPC's client-side health checking (A17): SERVING is healthy, any other status is
not, and a server that does not implement the health service (UNIMPLEMENTED) counts as
healthy, so enabling the check never takes out servers that simply lack it. We poll Check
rather than hold a Watch stream open: a stream per instance would pin a thread or socket per
instance, which the bounded probe pool exists to prevent.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from lbclient._exceptions import require
from lbclient._instance import ServiceInstance
from lbclient.health._checks import HealthCheck, Prober, ProbeResult


@dataclasses.dataclass(frozen=True)
class GrpcHealthCheck(HealthCheck):
    """Probe ``grpc.health.v1.Health/Check`` for ``service`` (``""``: the whole server).

    >>> LoadBalancer(registry, health_check=GrpcHealthCheck("orders.Orders"))  # doctest: +SKIP

    ``port`` probes another port than the traffic port; TLS is used when the registry says
    the instance speaks it (scheme ``grpcs`` or ``https``), with the system's roots.
    Raises MissingDependency at construction when ``lbclient[grpc]`` is not installed.
    """

    service: str = ""
    port: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _modules()  # fail now, where the user configures it, not in a background thread

    def open(self) -> Prober:
        return _GrpcProber(self)


def _modules() -> tuple[Any, Any, Any]:
    grpc = require("grpc", "GrpcHealthCheck", "grpc")
    pb2 = require("grpc_health.v1.health_pb2", "GrpcHealthCheck", "grpc")
    pb2_grpc = require("grpc_health.v1.health_pb2_grpc", "GrpcHealthCheck", "grpc")
    return grpc, pb2, pb2_grpc


class _GrpcProber:
    def __init__(self, check: GrpcHealthCheck) -> None:
        self._check = check
        self._grpc, self._pb2, self._pb2_grpc = _modules()
        self._stubs: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def _stub(self, instance: ServiceInstance) -> Any:
        with self._lock:
            entry = self._stubs.get(instance.id)
            if entry is None:
                host = f"[{instance.host}]" if ":" in instance.host else instance.host
                target = f"{host}:{self._check.port or instance.port}"
                if instance.secure:
                    channel = self._grpc.secure_channel(
                        target, self._grpc.ssl_channel_credentials()
                    )
                else:
                    channel = self._grpc.insecure_channel(target)
                entry = (channel, self._pb2_grpc.HealthStub(channel))
                self._stubs[instance.id] = entry
            return entry[1]

    def probe(self, instance: ServiceInstance) -> ProbeResult:
        request = self._pb2.HealthCheckRequest(service=self._check.service)
        try:
            response = self._stub(instance).Check(request, timeout=self._check.timeout)
        except self._grpc.RpcError as exc:
            code = exc.code()
            if code == self._grpc.StatusCode.UNIMPLEMENTED:
                return ProbeResult(True, "health service not implemented (counts as healthy)")
            return ProbeResult(False, f"gRPC {code.name}")
        except Exception as exc:
            return ProbeResult(False, f"{type(exc).__name__}: {exc}")
        status = self._pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return ProbeResult(response.status == self._pb2.HealthCheckResponse.SERVING, status)

    def forget(self, instance: ServiceInstance) -> None:
        with self._lock:
            entry = self._stubs.pop(instance.id, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        with self._lock:
            entries, self._stubs = list(self._stubs.values()), {}
        for channel, _ in entries:
            channel.close()
