"""GrpcHealthCheck: the standard ``grpc.health.v1.Health/Check`` probe (needs the [grpc] extra).

Follows gRPC's client-side health checking (A17): SERVING is healthy, any other status is
not, and a server that does not implement the health service (UNIMPLEMENTED) counts as
healthy, so enabling the check never takes out servers that simply lack it.

By default we poll Check rather than hold Watch streams: a Watch is a long-lived stream,
hence an open connection per instance for as long as it lives, which is what the bounded
probe pool exists to prevent for large services. ``watch=True`` opts in (``_grpc_watch``). Channels
are kept in a small LRU cache (``CHANNEL_CACHE`` or the check's concurrency, whichever is
larger): a small service reuses its connections, a large one never holds more open.

When the balancer also serves the service through a sync ``lbclient.grpc`` channel, Check
probes go through that channel's sub-channel for the instance once a call has opened it
(``ServiceState.channels``): one connection per instance instead of two, and the probe sees
what calls see (credentials, options); instances no call reaches keep the bounded cache.
A probe cut because that channel closed under it is rerun on a channel of our own, so
closing a channel never marks instances down. Probes on another ``port`` keep their own
channels, and so does Watch mode (its streams share one asyncio loop, where a sync channel
cannot be read without a blocked thread per stream); grpc.aio channels never lend theirs,
since they belong to their event loop and probes run on threads.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from lbclient import _validate as check
from lbclient._channels import ChannelProviders
from lbclient._exceptions import require
from lbclient._instance import ServiceInstance
from lbclient.health._checks import HealthCheck, Prober, ProbeResult

CHANNEL_CACHE = 16
"""At least this many probe channels stay open for reuse (one per recently probed instance)."""


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
    watch: bool = False
    """Stream status changes with Watch instead of polling Check (see ``_grpc_watch``): a
    change is seen at once, at the price of one open connection per instance. The
    thresholds still count probe results; set them to 1 to follow the stream exactly."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check.text("GrpcHealthCheck.service", self.service, empty=True)
        check.flag("GrpcHealthCheck.watch", self.watch)
        _modules()  # fail now, where the user configures it, not in a background thread

    def open(self) -> Prober:
        if self.watch:
            from lbclient.health._grpc_watch import GrpcWatchProber

            return GrpcWatchProber(self, _modules())
        return _GrpcProber(self, ChannelProviders.current())


def _modules() -> tuple[Any, Any, Any]:
    grpc = require("grpc", "GrpcHealthCheck", "grpc")
    pb2 = require("grpc_health.v1.health_pb2", "GrpcHealthCheck", "grpc")
    pb2_grpc = require("grpc_health.v1.health_pb2_grpc", "GrpcHealthCheck", "grpc")
    return grpc, pb2, pb2_grpc


class _GrpcProber:
    def __init__(self, check: GrpcHealthCheck, providers: ChannelProviders | None) -> None:
        self._check = check
        self._providers = providers if check.port is None else None
        self._grpc, self._pb2, self._pb2_grpc = _modules()
        self._stubs: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._capacity = max(CHANNEL_CACHE, check.concurrency)
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def _stub(self, instance: ServiceInstance) -> Any:
        evicted = []
        with self._lock:
            self._busy.add(instance.id)
            entry = self._stubs.get(instance.id)
            if entry is not None:
                self._stubs.move_to_end(instance.id)
            else:
                target = instance.authority(self._check.port)
                if instance.secure:
                    channel = self._grpc.secure_channel(
                        target, self._grpc.ssl_channel_credentials()
                    )
                else:
                    channel = self._grpc.insecure_channel(target)
                entry = (channel, self._pb2_grpc.HealthStub(channel))
                self._stubs[instance.id] = entry
                idle = [i for i in self._stubs if i not in self._busy]
                for old in idle[: max(0, len(self._stubs) - self._capacity)]:
                    evicted.append(self._stubs.pop(old)[0])
        for channel in evicted:  # idle: no probe of that instance is out
            channel.close()
        return entry[1]

    def probe(self, instance: ServiceInstance) -> ProbeResult:
        deadline = time.monotonic() + self._check.timeout
        for provider in self._providers.providers() if self._providers is not None else ():
            with provider.lend(instance) as channel:
                if channel is None:
                    continue
                self.forget(instance)  # the shared connection replaces our own
                stub = functools.partial(self._pb2_grpc.HealthStub, channel)
                result = self._check_on(stub, self._check.timeout)
            # A closed provider may have cut the probe: ask again on our own channel.
            if not provider.closed or deadline - time.monotonic() <= 0:
                return result
        try:
            return self._check_on(
                functools.partial(self._stub, instance), deadline - time.monotonic()
            )
        finally:
            with self._lock:
                self._busy.discard(instance.id)

    def _check_on(self, stub: Callable[[], Any], timeout: float) -> ProbeResult:
        request = self._pb2.HealthCheckRequest(service=self._check.service)
        try:
            response = stub().Check(request, timeout=timeout)
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
            entries, self._stubs = list(self._stubs.values()), OrderedDict()
        for channel, _ in entries:
            channel.close()
