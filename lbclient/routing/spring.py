"""Spring Cloud LoadBalancer's request-aware suppliers as routers.

- ``HintRouter``: ``HintBasedServiceInstanceListSupplier``. A request attribute (header, or
  gRPC metadata) names a hint; the instances whose ``metadata["hint"]`` equals it take the
  request; when none does, every instance may (as Spring).
- ``StickyCookieRouter``: ``RequestBasedStickySessionServiceInstanceListSupplier``. A cookie
  (or gRPC metadata entry) holds an instance id; that instance takes the request while it is
  usable, else normal picking.
- ``SameInstanceRouter``: ``SameInstancePreferenceServiceInstanceListSupplier``. Keep the
  instance chosen last (one per service, shared by every caller) while it is usable.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.routing._base import RequestHeader, Router, Routes, group_by, request_cookie

DEFAULT_HINT_HEADER = "X-SC-LB-Hint"
"""Spring's ``hint-header-name`` default."""
DEFAULT_STICKY_COOKIE = "sc-lb-instance-id"
"""Spring's ``sticky-session.instance-id-cookie-name`` default."""


class HintRouter(Router):
    """Route to the instances whose ``metadata[key]`` equals the request's hint, or
    ``default`` when the request names none (Spring's ``hint.<service>``)."""

    def __init__(
        self, header: str = DEFAULT_HINT_HEADER, key: str = "hint", default: str | None = None
    ) -> None:
        self.header = header
        self.key = key
        self.default = default

    def __repr__(self) -> str:
        return f"HintRouter(header={self.header!r}, key={self.key!r}, default={self.default!r})"

    def prepare(self, usable: Sequence[Endpoint], previous: Routes | None) -> Routes:
        return _ByHeader(group_by(usable, self.key), self.header, self.default)


class StickyCookieRouter(Router):
    """Route to the instance whose id the request's cookie names, while it is usable."""

    def __init__(self, cookie: str = DEFAULT_STICKY_COOKIE) -> None:
        self.cookie = cookie

    def __repr__(self) -> str:
        return f"StickyCookieRouter(cookie={self.cookie!r})"

    def prepare(self, usable: Sequence[Endpoint], previous: Routes | None) -> Routes:
        return _ByCookie({e.id: (e,) for e in usable}, self.cookie)


class _ByHeader(Routes):
    __slots__ = ("_default", "_name", "_read", "groups")

    def __init__(
        self, groups: dict[Hashable, tuple[Endpoint, ...]], name: str, default: str | None = None
    ) -> None:
        self.groups = groups
        self._name = name
        self._default = default
        self._read = RequestHeader(name)

    def route(self, context: PickContext) -> Hashable | None:
        value = self._read(context)
        if value is None:
            value = self._default
        return value if value in self.groups else None


class _ByCookie(_ByHeader):
    __slots__ = ()
    pins = True

    def route(self, context: PickContext) -> Hashable | None:
        value = request_cookie(context, self._name)
        return value if value in self.groups else None


class SameInstanceRouter(Router):
    """Keep sending to the instance chosen last while it stays usable."""

    def __repr__(self) -> str:
        return "SameInstanceRouter()"

    def prepare(self, usable: Sequence[Endpoint], previous: Routes | None) -> Routes:
        last = previous.last if isinstance(previous, _SameInstance) else None
        return _SameInstance({e.id: (e,) for e in usable}, last)


class _SameInstance(Routes):
    __slots__ = ("groups", "last")
    watches_picks = True
    pins = True

    def __init__(self, groups: dict[Hashable, tuple[Endpoint, ...]], last: str | None) -> None:
        self.groups = groups
        self.last = last

    def route(self, context: PickContext) -> Hashable | None:
        return self.last

    def picked(self, endpoint: Endpoint) -> None:
        if self.last != endpoint.id:
            self.last = endpoint.id  # one attribute store: atomic, no lock
