"""The routing settings of a service: checked when given, turned into the rules in order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbclient._exceptions import ConfigurationError
from lbclient.routing._base import Router
from lbclient.routing.spring import HintRouter, SameInstanceRouter, StickyCookieRouter

if TYPE_CHECKING:
    from lbclient._config import ServiceConfig


def check_routing(config: ServiceConfig) -> None:
    """Refuse a routing setting that cannot work, naming it, its value and what is valid."""
    for name in ("hint_header", "sticky_cookie"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigurationError(
                f"{name}={value!r} is invalid: expected a header or cookie name, or None (off)"
            )
    if not isinstance(config.hint_key, str) or not config.hint_key:
        raise ConfigurationError(
            f"hint_key={config.hint_key!r} is invalid: expected a non-empty metadata key"
        )
    for name in ("sticky_set_cookie", "same_instance"):
        if not isinstance(getattr(config, name), bool):
            raise ConfigurationError(
                f"{name}={getattr(config, name)!r} is invalid: expected True or False"
            )
    if config.sticky_set_cookie and config.sticky_cookie is None:
        raise ConfigurationError(
            "sticky_set_cookie=True is invalid without sticky_cookie: name the cookie, e.g. "
            "sticky_cookie='sc-lb-instance-id'"
        )
    routers = config.routers
    if isinstance(routers, (str, bytes, Router)) or not isinstance(routers, Sequence):
        raise ConfigurationError(
            f"routers={routers!r} is invalid: expected a list of lbclient.routing.Router"
        )
    for router in routers:
        if not isinstance(router, Router):
            raise ConfigurationError(
                f"routers item {router!r} is invalid: expected a lbclient.routing.Router, "
                "e.g. SubsetRouter('version', header='x-version')"
            )
    factor = config.overprovisioning_factor
    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or math.isnan(factor)
        or not 1.0 <= factor <= 1000.0
    ):
        raise ConfigurationError(
            f"overprovisioning_factor={factor!r} is invalid: expected a number in [1, 1000] "
            "(Envoy's 1.4; a large value gives hard failover)"
        )


def routers_for(config: ServiceConfig) -> tuple[Router, ...]:
    """The service's rules, in the order they are asked: sticky cookie, same instance,
    hint, then the ``routers`` given. The first that names a group takes the request."""
    rules: list[Router] = []
    if config.sticky_cookie is not None:
        rules.append(StickyCookieRouter(config.sticky_cookie))
    if config.same_instance:
        rules.append(SameInstanceRouter())
    if config.hint_header is not None:
        rules.append(HintRouter(config.hint_header, config.hint_key))
    rules.extend(config.routers)
    return tuple(rules)
