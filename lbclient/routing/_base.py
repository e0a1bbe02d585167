"""The router contract: request-aware rules between the usable list and the scheduler.

A ``Router`` is configuration (immutable, shareable between services). When a service's
usable list changes, the balancer asks each router to ``prepare`` it: the router groups the
endpoints (by metadata value, by instance id, ...) and returns ``Routes``, an immutable
table whose ``route(context)`` names the group that takes one request. Everything a rule
needs is computed in ``prepare``; ``route`` only reads the request and looks the group up.
Each group gets its own scheduler, built with the service's scheduler settings, so a canary
subset keeps round robin or peak EWMA inside itself.

Write your own rule by subclassing both (see docs/routing.md, "Your own rules").
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint


class Routes(ABC):
    """The groups of one usable list and the per-request choice among them.

    ``groups`` maps a group's key to its endpoints (never empty). ``route`` returns the key of
    the group that takes the request, or None to leave it to the next rule (and, after the
    last one, to the whole usable list). It may raise ``NoAvailableInstance`` (a subset with
    the ``"fail"`` fallback). It runs on every request: keep it to lookups.
    """

    groups: Mapping[Hashable, tuple[Endpoint, ...]]
    watches_picks: ClassVar[bool] = False
    """True when ``picked`` must hear of every pick (same-instance preference)."""
    pins: ClassVar[bool] = False
    """True when a group is one chosen instance (sticky session, same instance): a retry
    that already tried it moves on to the next rules. Other groups (subsets, hints) keep
    their retries inside themselves."""

    @abstractmethod
    def route(self, context: PickContext) -> Hashable | None:
        """The key of the group that takes this request, or None (not this rule's)."""

    def picked(self, endpoint: Endpoint) -> None:
        """The endpoint a request went to, whichever rule chose it (when ``watches_picks``)."""


class Router(ABC):
    """A request-aware rule: configuration that prepares ``Routes`` for each usable list."""

    @abstractmethod
    def prepare(self, usable: Sequence[Endpoint], previous: Routes | None) -> Routes:
        """Group ``usable`` (called when it changes, off the request path). ``previous`` is the
        table this one replaces (the same router's, for the same service), for rules that
        carry state across changes."""


def group_by(usable: Sequence[Endpoint], key: str) -> dict[Hashable, tuple[Endpoint, ...]]:
    """The endpoints by their ``metadata[key]`` value (those without it are in no group)."""
    groups: dict[Hashable, list[Endpoint]] = {}
    for endpoint in usable:
        value = endpoint.instance.metadata.get(key)
        if value is not None:
            groups.setdefault(value, []).append(endpoint)
    return {value: tuple(members) for value, members in groups.items()}


class RequestHeader:
    """Reads one request attribute, its name's forms worked out once: an httpx request's
    header (several values joined by ", "), or a gRPC call's metadata entry (lower case).

    On httpx it reads the normalized ``(raw, lower-case, value)`` entries directly when they
    are there: three times faster than ``Headers.get``, which re-encodes the name and
    decodes every entry it compares."""

    __slots__ = ("_key", "_lowered", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._key = name.lower()
        self._lowered = self._key.encode("latin-1", "replace")

    def __call__(self, context: PickContext) -> str | None:
        attributes = context.attributes
        request: Any = attributes.get("request")
        if request is None:
            return _metadata(attributes.get("metadata"), self._key)
        entries = getattr(request.headers, "_list", None)
        if type(entries) is not list:
            value: str | None = request.headers.get(self.name)
            return value
        lowered = self._lowered
        found: bytes | None = None
        for entry in entries:
            if entry[1] == lowered:
                found = entry[2] if found is None else found + b", " + entry[2]
        return None if found is None else found.decode("utf-8", "replace")


@functools.lru_cache(maxsize=256)
def _reader(name: str) -> RequestHeader:
    return RequestHeader(name)


def request_header(context: PickContext, name: str) -> str | None:
    """A request attribute by name: an httpx request's header, or a gRPC call's metadata
    entry (gRPC keys are lower case). None when the request has none, or when the context
    carries no request (a direct ``lb.pick``)."""
    return _reader(name)(context)


def request_cookie(context: PickContext, name: str) -> str | None:
    """A cookie sent with an httpx request, or a gRPC call's metadata entry of that name."""
    attributes = context.attributes
    request: Any = attributes.get("request")
    if request is not None:
        for header in request.headers.get_list("cookie"):
            for part in header.split(";"):
                key, _, value = part.strip().partition("=")
                if key == name:
                    return str(value)
        return None
    return _metadata(attributes.get("metadata"), name.lower())


def _metadata(metadata: Any, key: str) -> str | None:
    if not metadata:
        return None
    for entry, value in metadata:
        if entry == key:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None
