"""The keyword options of the httpx transports, typed and checked where they are given.

``LoadBalancedTransport(lb, host_header=42)`` must fail at once (and in a type checker), not
when the first request builds its headers. ``TransportOptions`` types the keywords of both
transports; ``checked`` turns a misspelled or mistyped one into a ConfigurationError.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from lbclient import _validate as check
from lbclient._balancer import LoadBalancer
from lbclient._hedge import HedgePolicy
from lbclient._retry import RetryPolicy
from lbclient.transport._core import KeySource, TransportCore


class TransportOptions(TypedDict, total=False):
    """``LoadBalancedTransport(lb, **options)``; see the README's httpx section."""

    retry: RetryPolicy | None
    key: KeySource | None
    source: str | None
    unknown_service: Literal["raise", "passthrough"]
    host_header: str
    tls_server_name: str
    allow_scheme_downgrade: bool
    hedge: HedgePolicy | None


_FORBIDDEN = frozenset(" \r\n\t\x00/@")
"""Never valid in a Host header or a TLS server name; ``user@evil.example`` would be sent raw."""


def checked(lb: object, options: TransportOptions) -> TransportOptions:
    """``options`` if every one is known and valid; ConfigurationError naming the first not."""
    check.instance_of("lb", lb, LoadBalancer, "lbclient.LoadBalancer({...})")
    check.check_names(options, check.keyword_settings(TransportCore), what="transport option")
    if options.get("retry") is not None:
        check.instance_of("retry", options["retry"], RetryPolicy, "lbclient.RetryPolicy()")
    key = options.get("key")
    if key is not None and not callable(key):
        raise check.invalid("key", key, "a function of the request, e.g. key_from_header('X')")
    check.optional(check.text, "source", options.get("source"))
    if options.get("unknown_service", "raise") not in ("raise", "passthrough"):
        raise check.invalid(
            "unknown_service", options.get("unknown_service"), "'raise' or 'passthrough'"
        )
    check.flag("allow_scheme_downgrade", options.get("allow_scheme_downgrade", False))
    if options.get("hedge") is not None:
        check.instance_of("hedge", options["hedge"], HedgePolicy, "lbclient.HedgePolicy('p95')")
    for name in ("host_header", "tls_server_name"):
        value = check.text(name, options.get(name, "instance"))
        if _FORBIDDEN & set(value) or not value.isprintable() or len(value) > 253:
            raise check.invalid(
                name, value, "'instance', 'service' or a host name (no spaces, '/' or '@')"
            )
    return options
