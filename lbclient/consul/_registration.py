"""The no-I/O core of self-registration: what to register, what to report, when to act.

The blocking and asyncio registrars in ``_registrar`` are thin loops around
``RegistrationCore``: it builds the registration, asks the app's health callback, picks the
TTL call, and decides waits and log lines after successes and failures.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from lbclient import _validate as check
from lbclient._exceptions import ConfigurationError
from lbclient.consul._duration import format_go_duration, to_seconds

log = logging.getLogger("lbclient.consul")

HealthResult = str | tuple[str, str] | bool | None
"""``"passing"``/``"warning"``/``"critical"``, optionally with a note; True/None mean passing."""
HealthCallback = Callable[[], HealthResult | Awaitable[HealthResult]]

_WEIGHT_KEYS = frozenset({"Passing", "Warning", "passing", "warning"})

_CALLS = {"passing": "ttl_pass", "warning": "ttl_warn", "critical": "ttl_fail"}


class RegistrationCore:
    """Everything the registrars share; see ConsulRegistrar for the options."""

    def __init__(
        self,
        name: str,
        port: int,
        *,
        service_id: str | None = None,
        address: str | None = None,
        tags: Iterable[str] = (),
        meta: Mapping[str, str] | None = None,
        weights: Mapping[str, int] | None = None,
        ttl: float | str = "10s",
        interval: float | str | None = None,
        deregister_critical_after: float | str | None = "1m",
        health: HealthCallback | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ConfigurationError(f"the service name to register must be a string, got {name!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"service {name!r}: port must be 1-65535, got {port!r}")
        check.optional(check.text, "service_id", service_id)
        check.optional(check.text, "address", address)
        tags = check.strings("tags", tags, example="['v2']")
        meta = check.mapping("meta", meta or {}, example="{'version': '2'}")
        for key, value in meta.items():
            check.text("meta key", key)
            check.text(f"meta[{key!r}]", value, empty=True)
        if weights is not None:
            check.check_names(check.mapping("weights", weights), _WEIGHT_KEYS, what="weights key")
            for weight_key, weight in weights.items():
                check.integer(f"weights[{weight_key!r}]", weight, minimum=0, maximum=65535)
        if health is not None and not callable(health):
            raise check.invalid("health", health, "a function returning 'passing', ... or None")
        try:
            self.ttl = to_seconds(ttl, "ttl")
            self.interval = self.ttl / 3 if interval is None else to_seconds(interval, "interval")
            self.deregister_after = (
                None
                if deregister_critical_after is None
                else to_seconds(deregister_critical_after, "deregister_critical_after")
            )
        except ValueError as exc:
            raise ConfigurationError(f"service {name!r}: {exc}", service=name) from None
        if self.ttl <= 0 or not check.MIN_SECONDS <= self.interval < self.ttl:
            raise ConfigurationError(
                f"service {name!r}: need 1ms <= interval < ttl (got ttl={ttl!r}, interval="
                f"{interval!r}); the default interval is ttl/3",
                service=name,
            )
        if weights is not None and not weights.get("Passing", weights.get("passing", 1)):
            raise ConfigurationError(f"service {name!r}: Weights.Passing must be >= 1")
        self.name = name
        self.port = port
        self.service_id = service_id or f"{name}-{socket.gethostname()}-{port}"
        self.check_id = f"service:{self.service_id}"
        self.address = address
        self.tags = list(tags)
        self.meta = dict(meta or {})
        self.weights = dict(weights) if weights else None
        self.health = health
        self.registered = False
        self.leaving = False
        """Set once the process is leaving (exit, SIGTERM): never register again."""
        self.errors = 0
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"<registration {self.service_id!r} of {self.name!r} port {self.port}>"

    def register_kwargs(self, status: str, note: str) -> dict[str, Any]:
        """Arguments of py-consul's ``agent.service.register``, the check starting at ``status``."""
        check: dict[str, Any] = {
            "CheckID": self.check_id,
            "Name": f"Service '{self.name}' TTL heartbeat",
            "TTL": format_go_duration(self.ttl),
            "Status": status,
            "Notes": f"lbclient heartbeat every {format_go_duration(self.interval)}",
        }
        if self.deregister_after is not None:
            check["DeregisterCriticalServiceAfter"] = format_go_duration(self.deregister_after)
        kwargs: dict[str, Any] = {
            "name": self.name,
            "service_id": self.service_id,
            "port": self.port,
            "tags": self.tags,
            "meta": self.meta,
            "check": check,
            "replace_existing_checks": True,
        }
        if self.address:
            kwargs["address"] = self.address
        if self.weights:
            kwargs["weights"] = self.weights
        return kwargs

    def call_for(self, status: str) -> str:
        """The py-consul ``agent.check`` method that reports ``status``."""
        return _CALLS[status]

    def interpret(self, result: HealthResult) -> tuple[str, str]:
        """Normalise what the health callback returned into ``(status, note)``."""
        note = ""
        if isinstance(result, tuple):
            result, note = result
        if result is None or result is True:
            return "passing", note
        if result is False:
            return "critical", note
        if result not in _CALLS:
            return (
                "critical",
                f"health callback returned {result!r}; expected passing/warning/critical",
            )
        return str(result), str(note)

    def callback_failed(self, exc: BaseException) -> tuple[str, str]:
        log.warning("%s: health callback raised %r; reporting critical", self.name, exc)
        return "critical", f"health callback raised {type(exc).__name__}: {exc}"

    def succeeded(self) -> float:
        """After a successful beat: log a recovery once, return the wait until the next one."""
        if self.errors:
            log.info("%s: Consul reachable again, heartbeat resumed", self.service_id)
            self.errors = 0
        return self.interval

    def forgotten(self) -> bool:
        """The agent answered 404 to a TTL update: it lost the service (restart, reaper).

        Returns whether to register again (not while the process is leaving)."""
        self.registered = False
        if self.leaving:
            return False
        log.warning("%s: the Consul agent forgot the service; registering again", self.service_id)
        return True

    def failed(self, exc: BaseException) -> float:
        """After a failed beat: log once per outage, retry sooner than the interval (jittered)."""
        self.errors += 1
        if self.errors == 1 or isinstance(exc, ConfigurationError):
            log.warning("%s: heartbeat failed, will retry: %s", self.service_id, exc)
        ceiling: float = min(self.interval, 2.0 ** min(self.errors, 5))
        return self._rng.uniform(0.5, 1.0) * ceiling
