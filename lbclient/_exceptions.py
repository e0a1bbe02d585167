"""The one exception tree every lbclient failure comes from.

    LBError
    ├── ConfigurationError        bad input: fix the code or the registry data (also a ValueError)
    │   ├── RegistryAccessDenied  the registry refused our credentials (403, 401)
    │   └── SchemeDowngradeRefused  a registry entry would send an https:// request in clear
    ├── ServiceNotFound           the registry has never heard of the service (also a LookupError)
    ├── NoAvailableInstance       the service exists but no instance can take the request now
    ├── RegistryUnavailable       the registry cannot be reached and there is no last good list
    ├── DeadlineExceeded          the call's deadline passed (also an httpx.TimeoutException)
    ├── Overloaded                a concurrency limit refused the call (max_requests, ...)
    ├── CircuitOpen               the service's circuit breaker is open: the call was not sent
    └── MissingDependency         an optional extra is not installed (also an ImportError)

A setting that is valid but useless in its combination gives a ``ConfigurationWarning``.

Each carries ``service`` and, where there is one, ``instance``, so handlers can act on them
without parsing messages. Messages say what to do next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from lbclient._instance import ServiceInstance


class LBError(Exception):
    """Base of every error lbclient raises."""

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        instance: ServiceInstance | None = None,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.instance = instance


class ConfigurationError(LBError, ValueError):
    """The configuration or the registry data is invalid; the message names the culprit."""


class RegistryAccessDenied(ConfigurationError):
    """The registry rejected our credentials: a token or a permission is missing."""


class SchemeDowngradeRefused(ConfigurationError):
    """The caller wrote ``https://`` but the picked instance is registered as plain ``http``;
    the request is not sent (opt in with ``allow_scheme_downgrade=True``)."""


class ServiceNotFound(LBError, LookupError):
    """The registry does not know the service at all (a typo, or it was never registered)."""


class NoAvailableInstance(LBError):
    """The service is known, but no instance can take this request right now."""


class RegistryUnavailable(LBError):
    """The registry cannot be reached and there is no last good list to fall back on."""


class DeadlineExceeded(LBError, httpx.TimeoutException):
    """The call's deadline (``RetryPolicy.timeout`` or ``extensions={"lb_timeout": s}``)
    passed before an answer came; its notes list the attempts. Caught by ``except
    httpx.TimeoutException`` as well as ``except lbclient.LBError``."""


class Overloaded(LBError):
    """A concurrency limit of the service refused the call at once (Envoy's circuit-breaker
    overflow): ``max_requests`` with its ``max_pending`` queue full or waited out, or every
    instance at ``max_requests_per_instance``. Nothing was sent; ``limit`` names the setting.
    Retrying at once only adds load: back off, or shed the work."""

    def __init__(
        self,
        message: str,
        *,
        limit: str,
        service: str | None = None,
        instance: ServiceInstance | None = None,
    ) -> None:
        super().__init__(message, service=service, instance=instance)
        self.limit = limit


class CircuitOpen(LBError):
    """The service's circuit breaker is open (too many of its recent calls failed), so the
    call was refused without being sent; ``retry_in`` says in how many seconds it lets a
    trial call through (resilience4j's CallNotPermittedException)."""

    def __init__(self, message: str, *, retry_in: float, service: str | None = None) -> None:
        super().__init__(message, service=service)
        self.retry_in = retry_in


class MissingDependency(LBError, ImportError):
    """An optional integration is used without its extra installed."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs an optional dependency: pip install 'lbclient[{extra}]'")
        self.extra = extra


class ConfigurationWarning(UserWarning):
    """A setting that is valid but cannot do what it says in this combination (slow start
    under a scheduler that ignores weights)."""


def require(module: str, feature: str, extra: str) -> object:
    """Import ``module`` or raise MissingDependency telling which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(feature, extra) from exc
