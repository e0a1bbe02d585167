"""Active health checks: what to probe (HTTP, TCP) and how often, with Envoy's thresholds.

A check is a frozen configuration object, shareable between services. ``open()`` makes the
stateful prober one service uses (an HTTP client with reused connections, gRPC channels);
``probe(instance)`` blocks for at most ``timeout`` and never raises. Probes run on a small
bounded pool owned by the service's HealthCheckFilter, never on the request path.
"""

from __future__ import annotations

import dataclasses
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Protocol

import httpx

from lbclient import _validate as check
from lbclient._exceptions import ConfigurationError
from lbclient._instance import ServiceInstance


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's verdict and a short human-readable reason (shown in stats and logs)."""

    healthy: bool
    detail: str


class Prober(Protocol):
    """The per-service, stateful side of a check."""

    def probe(self, instance: ServiceInstance) -> ProbeResult:
        """Probe once; block at most the check's timeout; never raise."""

    def forget(self, instance: ServiceInstance) -> None:
        """The instance left: drop whatever was kept for it (a channel)."""

    def close(self) -> None:
        """Release connections."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HealthCheck(ABC):
    """Timing shared by every kind of check (Envoy's HealthCheck fields).

    - ``interval`` seconds between probes of one instance, each spread by +/- ``jitter``
      (a fraction of the interval) so that probes of many instances do not line up.
    - ``timeout``: a probe that takes longer fails.
    - ``unhealthy_threshold`` consecutive failures take a healthy instance out;
      ``healthy_threshold`` consecutive passes bring an unhealthy one back. The very first
      probe of a new instance decides at once, bypassing the thresholds (Envoy's
      ``first_check``); until it answers, the instance is usable (we do not stall a fresh
      balancer waiting for probes; outlier detection and retries cover that window).
    - ``concurrency``: at most this many probes of one service run at once, so a service
      with 1,000 instances never opens 1,000 sockets together.
    """

    interval: float = 5.0
    timeout: float = 1.0
    jitter: float = 0.1
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    concurrency: int = 8

    def __post_init__(self) -> None:
        name = type(self).__name__
        check.seconds(f"{name}.interval", self.interval)
        check.seconds(f"{name}.timeout", self.timeout)
        jitter = check.number(f"{name}.jitter", self.jitter, minimum=0.0, maximum=1.0)
        if jitter == 1.0:  # a fraction of the interval: 1 would allow back-to-back probes
            raise check.invalid(f"{name}.jitter", self.jitter, "a fraction in [0, 1)")
        for threshold in ("healthy_threshold", "unhealthy_threshold"):
            check.integer(f"{name}.{threshold}", getattr(self, threshold), minimum=1,
                          maximum=1000)  # fmt: skip
        check.integer(f"{name}.concurrency", self.concurrency, minimum=1, maximum=1024)
        port = getattr(self, "port", None)
        check.optional(check.integer, f"{name}.port", port, minimum=1, maximum=65535)

    @abstractmethod
    def open(self) -> Prober:
        """Make the prober one service uses (called once per service)."""


@dataclasses.dataclass(frozen=True)
class HttpHealthCheck(HealthCheck):
    """``GET path`` on each instance; healthy when the status is in ``statuses``.

    >>> lb = LoadBalancer(registry, health_check=HttpHealthCheck("/health"))  # doctest: +SKIP

    ``port`` probes another port than the traffic port (a management port); ``https`` is
    used when the registry says the instance speaks TLS. ``headers`` are sent with every
    probe (e.g. a ``Host``) and never logged.
    """

    path: str = "/health"
    statuses: Iterable[int] = dataclasses.field(default=range(200, 300), repr=False)
    port: int | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    """Sent with every probe; may carry a token, so never shown in reprs or logs."""
    verify: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        path = check.text("HttpHealthCheck.path", self.path)
        if not path.startswith("/") or any(c in path for c in " \r\n\t\x00"):
            raise check.invalid(
                "HttpHealthCheck.path", path, "a path starting with '/', without spaces"
            )
        statuses = check.statuses(
            "HttpHealthCheck.statuses", self.statuses, expected="a collection of statuses"
        )
        object.__setattr__(self, "statuses", statuses)
        headers = check.mapping("HttpHealthCheck.headers", self.headers, example="{'Host': 'x'}")
        for key, value in headers.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigurationError(
                    "HttpHealthCheck.headers is invalid: expected strings to strings "
                    f"(a header {type(key).__name__}: {type(value).__name__} was given)"
                )  # the values may carry a token: never shown
        check.flag("HttpHealthCheck.verify", self.verify)

    def open(self) -> Prober:
        return _HttpProber(self)


class _HttpProber:
    def __init__(self, check: HttpHealthCheck) -> None:
        self._check = check
        self._statuses = frozenset(check.statuses)
        limits = httpx.Limits(
            max_connections=check.concurrency, max_keepalive_connections=check.concurrency
        )
        self._client = httpx.Client(
            timeout=check.timeout, limits=limits, verify=check.verify, headers=check.headers
        )

    def probe(self, instance: ServiceInstance) -> ProbeResult:
        scheme = "https" if instance.secure else "http"
        url = f"{scheme}://{instance.authority(self._check.port)}{self._check.path}"
        try:
            response = self._client.get(url)
        except httpx.HTTPError as exc:
            return ProbeResult(False, f"{type(exc).__name__}: {exc}")
        status = response.status_code
        return ProbeResult(status in self._statuses, f"HTTP {status}")

    def forget(self, instance: ServiceInstance) -> None:
        return None

    def close(self) -> None:
        self._client.close()


@dataclasses.dataclass(frozen=True)
class TcpHealthCheck(HealthCheck):
    """Healthy when a TCP connection to the instance (or ``port``) opens within the timeout."""

    port: int | None = None

    def open(self) -> Prober:
        return _TcpProber(self)


class _TcpProber:
    def __init__(self, check: TcpHealthCheck) -> None:
        self._check = check

    def probe(self, instance: ServiceInstance) -> ProbeResult:
        address = (instance.ascii_host, self._check.port or instance.port)
        try:
            with socket.create_connection(address, timeout=self._check.timeout):
                return ProbeResult(True, "connected")
        except OSError as exc:
            return ProbeResult(False, f"{type(exc).__name__}: {exc.strerror or exc}")

    def forget(self, instance: ServiceInstance) -> None:
        return None

    def close(self) -> None:
        return None
