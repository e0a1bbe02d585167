"""Kubernetes API failures translated into lbclient's exception tree. No I/O.

The API's own ``Status.message`` is quoted (it names the user and the verb, never a token);
our text says what to grant or to change.
"""

from __future__ import annotations

import json
from typing import Any

from lbclient._exceptions import (
    ConfigurationError,
    LBError,
    RegistryAccessDenied,
    RegistryUnavailable,
)


class Expired(Exception):
    """The watch's resourceVersion is too old (ERROR event or HTTP 410): list again."""


def status_message(body: bytes | str | None) -> str:
    """The ``message`` of a Status body, or a short excerpt of whatever came back."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data: Any = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return text[:200]


def error_for_status(
    status: int,
    body: bytes | str | None,
    *,
    service: str,
    namespace: str,
    resource: str,
    host: str,
) -> Exception:
    """The exception for a non-2xx answer to a list or watch of ``resource``."""
    said = status_message(body)
    said = f" (the API server said: {said})" if said else ""
    if status == 401:
        return RegistryAccessDenied(
            f"the Kubernetes API at {host} rejected our credentials (401 Unauthorized) while "
            f"listing {resource} for service {service!r}{said}; check the kubeconfig user or "
            "the service-account token",
            service=service,
        )
    if status == 403:
        return RegistryAccessDenied(
            f"permission denied (403 Forbidden): lbclient needs list and watch on {resource} "
            f"in namespace {namespace!r}{said}; grant them with a Role and RoleBinding "
            f"(verbs: list, watch; resource: {resource})",
            service=service,
        )
    if status == 404:
        hint = (
            "; this cluster may predate discovery.k8s.io/v1 (Kubernetes < 1.21): pass "
            "legacy_endpoints=True to read core/v1 Endpoints"
            if resource.startswith("endpointslices")
            else ""
        )
        return ConfigurationError(
            f"the Kubernetes API at {host} has no {resource} in namespace {namespace!r} "
            f"(404){said}{hint}",
            service=service,
        )
    if status == 410:
        return Expired(said)
    return RegistryUnavailable(
        f"the Kubernetes API at {host} answered {status} while listing {resource} for "
        f"service {service!r}{said}; keeping the last known instances",
        service=service,
    )


def unreachable(exc: BaseException, *, service: str, host: str) -> LBError:
    """A transport failure (refused, reset, timeout) as RegistryUnavailable."""
    return RegistryUnavailable(
        f"cannot reach the Kubernetes API at {host} for service {service!r}: "
        f"{type(exc).__name__}: {exc}; check the API server address and the network",
        service=service,
    )
