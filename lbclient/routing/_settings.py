"""The routing settings of a service: checked when given, turned into the rules in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from lbclient import _validate as check
from lbclient.routing._base import Router
from lbclient.routing.spring import (
    DEFAULT_HINT_HEADER,
    HintRouter,
    SameInstanceRouter,
    StickyCookieRouter,
)


class ServiceConfig(Protocol):
    """The routing settings of ``lbclient.ServiceConfig``, all this module reads (so routing
    does not depend on the configuration module, which depends on it)."""

    @property
    def zone(self) -> str | None: ...
    @property
    def hint_header(self) -> str | None: ...
    @property
    def hint_key(self) -> str: ...
    @property
    def hint(self) -> str | None: ...
    @property
    def sticky_cookie(self) -> str | None: ...
    @property
    def sticky_set_cookie(self) -> bool: ...
    @property
    def same_instance(self) -> bool: ...
    @property
    def routers(self) -> Sequence[Router]: ...
    @property
    def overprovisioning_factor(self) -> float: ...
    @property
    def zone_routing(self) -> str: ...
    @property
    def caller_zones(self) -> Mapping[str, float] | None: ...
    @property
    def zone_min_cluster_size(self) -> int: ...


MAX_ROUTERS = 100


def check_routing(config: ServiceConfig) -> None:
    """Refuse a routing setting that cannot work, naming it, its value and what is valid."""
    for name in ("hint_header", "sticky_cookie"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise check.invalid(name, value, "a header or cookie name, or None (off)")
    check.text("hint_key", config.hint_key)
    check.optional(check.text, "hint", config.hint)
    check.flag("sticky_set_cookie", config.sticky_set_cookie)
    check.flag("same_instance", config.same_instance)
    if config.sticky_set_cookie and config.sticky_cookie is None:
        raise check.invalid(
            "sticky_set_cookie", True, "False without sticky_cookie (name the cookie first)"
        )
    routers = config.routers
    if isinstance(routers, (str, bytes, Router)) or not isinstance(routers, (list, tuple)):
        raise check.invalid("routers", routers, "a list of lbclient.routing.Router")
    if len(routers) > MAX_ROUTERS:
        raise check.invalid("routers", routers, f"at most {MAX_ROUTERS} routers")
    for router in routers:
        if not isinstance(router, Router):
            raise check.invalid(
                "routers",
                routers,
                f"lbclient.routing.Router objects (e.g. SubsetRouter('version', "
                f"header='x-version')), not {router!r}",
            )
    object.__setattr__(config, "routers", tuple(routers))
    check.number(
        "overprovisioning_factor", config.overprovisioning_factor, minimum=1.0, maximum=1000.0
    )
    _check_zones(config)


def _check_zones(config: ServiceConfig) -> None:
    if config.zone_routing not in ("prefer", "aware"):
        raise check.invalid("zone_routing", config.zone_routing, "'prefer' or 'aware'")
    if config.zone_routing == "aware" and config.zone is None:
        raise check.invalid("zone_routing", "aware", "'prefer' unless zone (the caller's) is set")
    check.integer("zone_min_cluster_size", config.zone_min_cluster_size, minimum=1, maximum=10_000)
    callers = config.caller_zones
    if callers is None:
        return
    if config.zone_routing != "aware":
        raise check.invalid("caller_zones", callers, "None unless zone_routing='aware'")
    check.mapping("caller_zones", callers, example="{'eu-1a': 3, 'eu-1b': 1}")
    for name, weight in check.bounded("caller_zones", callers.items()):
        check.text("caller_zones key", name)
        check.number(f"caller_zones[{name!r}]", weight, minimum=0.0)
    if not sum(callers.values()):
        raise check.invalid("caller_zones", callers, "at least one zone with callers (> 0)")
    object.__setattr__(config, "caller_zones", dict(callers))


def routers_for(config: ServiceConfig) -> tuple[Router, ...]:
    """The service's rules, in the order they are asked: sticky cookie, same instance,
    hint, then the ``routers`` given. The first that names a group takes the request."""
    rules: list[Router] = []
    if config.sticky_cookie is not None:
        rules.append(StickyCookieRouter(config.sticky_cookie))
    if config.same_instance:
        rules.append(SameInstanceRouter())
    if config.hint_header is not None or config.hint is not None:
        header = config.hint_header or DEFAULT_HINT_HEADER
        rules.append(HintRouter(header, config.hint_key, config.hint))
    rules.extend(config.routers)
    return tuple(rules)
