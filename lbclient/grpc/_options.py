"""The keyword options of the load-balanced gRPC channels, typed and checked where given.

``BalancingOptions`` types the ``**lb_options`` of ``insecure_channel``/``secure_channel``
(sync and aio), so a type checker rejects ``retry=3`` or a misspelled option;
``check_channel_args`` checks grpcio's own arguments before any sub-channel is made.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal, TypedDict

import grpc

from lbclient import _validate as check
from lbclient._hedge import HedgePolicy
from lbclient._retry import RetryPolicy
from lbclient.grpc._core import KeyFunction


class BalancingOptions(TypedDict, total=False):
    """``key`` (metadata name or function), ``retry``, ``idempotent``, ``hedge`` (see
    insecure_channel)."""

    key: str | KeyFunction | None
    retry: RetryPolicy | None
    idempotent: Collection[str] | Literal["all"]
    hedge: HedgePolicy | None


def balancing(options: BalancingOptions) -> BalancingOptions:
    """``options`` if every name is known (a typo is a ConfigurationError with a did-you-mean,
    not a TypeError); their values are checked by the channel."""
    check.check_names(options, BalancingOptions.__optional_keys__, what="channel option")
    return options


def check_channel_args(
    credentials: object, options: object, compression: object
) -> tuple[tuple[str, Any], ...]:
    """grpcio's channel arguments, checked; returns ``options`` as a tuple of pairs."""
    if credentials is not None:
        check.instance_of(
            "credentials", credentials, grpc.ChannelCredentials, "grpc.ssl_channel_credentials()"
        )
    if compression is not None:
        check.instance_of("compression", compression, grpc.Compression, "grpc.Compression.Gzip")
    if options is None:
        return ()
    if isinstance(options, (str, bytes)) or not isinstance(options, Collection):
        raise check.invalid("options", options, "a list of (name, value) pairs")
    pairs = tuple(options)
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise check.invalid(
                "options", options, f"(name, value) pairs such as ('grpc.lb_policy_name', ...), "
                f"not {pair!r}"
            )  # fmt: skip
    return pairs
