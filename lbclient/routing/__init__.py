"""Request-aware routing: the stage between the usable list and the scheduler.

Built-in rules (per-service settings, see ``ServiceConfig``): ``sticky_cookie``,
``same_instance``, ``hint_header``, and any ``routers`` given (``SubsetRouter`` for subsets
and canary splits, or your own ``Router``). Priority levels (``ServiceInstance.priority``)
use the same stage. See docs/routing.md.
"""

from __future__ import annotations

from lbclient.routing._base import (
    RequestHeader,
    Router,
    Routes,
    group_by,
    request_cookie,
    request_header,
)
from lbclient.routing._schedule import smooth_cycle
from lbclient.routing._stage import RoutedScheduler
from lbclient.routing.priority import PriorityPlan, plan_priorities, priority_loads
from lbclient.routing.spring import (
    DEFAULT_HINT_HEADER,
    DEFAULT_STICKY_COOKIE,
    HintRouter,
    SameInstanceRouter,
    StickyCookieRouter,
)
from lbclient.routing.subset import SubsetRouter

__all__ = [
    "DEFAULT_HINT_HEADER",
    "DEFAULT_STICKY_COOKIE",
    "HintRouter",
    "PriorityPlan",
    "RequestHeader",
    "RoutedScheduler",
    "Router",
    "Routes",
    "SameInstanceRouter",
    "StickyCookieRouter",
    "SubsetRouter",
    "group_by",
    "plan_priorities",
    "priority_loads",
    "request_cookie",
    "request_header",
    "smooth_cycle",
]
