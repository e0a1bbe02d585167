"""The routing stage: one scheduler per group, chosen per request by the rules in order.

``RoutedScheduler`` stands where the service's scheduler stands and is built, like it, only
when the usable list changes: it asks every router to ``prepare`` the list and builds a
scheduler of the service's kind (with its options) over each group. The traffic no rule
takes goes to the whole list, or, when ``Shares`` split it (several priority levels, or
zone-aware routing), to one scheduler per group with the shares laid out as a smooth cycle.
A pick asks the rules in order; the first that names a group picks inside it. With no rule
and no shares, the balancer builds the plain scheduler instead: the stage costs nothing.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.filters.zone import instance_zone
from lbclient.routing._base import Router, Routes
from lbclient.routing._schedule import Rotation, smooth_cycle
from lbclient.schedulers._base import Scheduler


class _One(Scheduler):
    """A group of one instance (sticky session, same instance): nothing to schedule. It
    returns its instance even to a retry that tried it; the stage then moves on."""

    name = "one"

    def pick(self, context: PickContext) -> Endpoint:
        return self.endpoints[0]

    def choose(self, context: PickContext) -> Endpoint:
        return self.endpoints[0]


@dataclasses.dataclass(frozen=True)
class Shares:
    """How the traffic no rule took is shared between groups of the usable list: priority
    levels (percent) or zones (basis points), laid out as a smooth cycle."""

    by: Literal["priority", "zone"]
    shares: Mapping[Any, int]

    def group_of(self, endpoint: Endpoint) -> Hashable:
        if self.by == "priority":
            return endpoint.instance.priority
        return instance_zone(endpoint.instance)


class _Table:
    """One router's routes and the scheduler of each of its groups."""

    __slots__ = ("routes", "schedulers")

    def __init__(self, routes: Routes, schedulers: dict[Hashable, Scheduler]) -> None:
        self.routes = routes
        self.schedulers = schedulers


class _Levels(Scheduler):
    """Groups sharing traffic (priority levels, zones): a smooth cycle of groups by share, a
    scheduler inside each. A retry that finds every instance of its group already tried goes
    to the rest of the list (Envoy's ``previous_priorities`` retry plugin, for levels)."""

    name = "shares"

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        levels: dict[Hashable, Scheduler],
        loads: Mapping[Hashable, int],
        rest: Scheduler,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(endpoints, rng=rng)
        self.levels = levels
        self.rest = rest
        self._only: Scheduler | None = next(iter(levels.values())) if len(levels) == 1 else None
        self._rotation = Rotation(smooth_cycle(loads), self.rng)

    def pick(self, context: PickContext) -> Endpoint:
        group = self._only or self.levels[self._rotation.next()]
        endpoint = group.pick(context)
        if context.exclude and endpoint.id in context.exclude:
            return self.rest.pick(context)
        return endpoint

    def choose(self, context: PickContext) -> Endpoint:
        return self.pick(context)


class RoutedScheduler(Scheduler):
    """The service's scheduler behind request-aware rules and priority levels."""

    name = "routed"

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        base: type[Scheduler],
        options: Mapping[str, Any],
        routers: Sequence[Router] = (),
        shares: Shares | None = None,
        rng: random.Random | None = None,
        previous: Scheduler | None = None,
    ) -> None:
        super().__init__(endpoints, rng=rng)
        self.base = base
        self._options = dict(options)
        old = previous if isinstance(previous, RoutedScheduler) else None
        self.tables: tuple[_Table, ...] = tuple(
            self._table(router, old.tables[i] if old and i < len(old.tables) else None)
            for i, router in enumerate(routers)
        )
        self._watchers = tuple(t.routes for t in self.tables if t.routes.watches_picks)
        self.shares = shares
        self.fallback: Scheduler = self._fallback(old.fallback if old else previous)

    def _build(self, members: Sequence[Endpoint], previous: Scheduler | None) -> Scheduler:
        if len(members) == 1:
            return _One(members, rng=self.rng)
        if previous is not None and type(previous) is not self.base:
            previous = None
        return self.base(members, rng=self.rng, previous=previous, **self._options)

    def _table(self, router: Router, old: _Table | None) -> _Table:
        routes = router.prepare(self.endpoints, old.routes if old else None)
        before = old.schedulers if old else {}
        schedulers = {
            key: self._build(members, before.get(key))
            for key, members in routes.groups.items()
            if members
        }
        return _Table(routes, schedulers)

    def _fallback(self, previous: Scheduler | None) -> Scheduler:
        """The scheduler of the traffic no rule took: shared between groups when ``shares``
        are given (the groups with a share and an endpoint), else over the whole list."""
        if self.shares is None:
            return self._build(self.endpoints, previous)
        groups: dict[Hashable, list[Endpoint]] = {}
        for endpoint in self.endpoints:
            key = self.shares.group_of(endpoint)
            if self.shares.shares.get(key):
                groups.setdefault(key, []).append(endpoint)
        if not groups:
            return self._build(self.endpoints, previous)
        old = previous.levels if isinstance(previous, _Levels) else {}
        rest = previous.rest if isinstance(previous, _Levels) else previous
        levels = {key: self._build(members, old.get(key)) for key, members in groups.items()}
        loads = {key: self.shares.shares[key] for key in groups}
        return _Levels(
            self.endpoints,
            levels=levels,
            loads=loads,
            rest=self._build(self.endpoints, rest),
            rng=self.rng,
        )

    def pick(self, context: PickContext) -> Endpoint:
        endpoint = self._route(context)
        if self._watchers:
            for routes in self._watchers:
                routes.picked(endpoint)
        return endpoint

    def _route(self, context: PickContext) -> Endpoint:
        exclude = context.exclude
        for table in self.tables:
            key = table.routes.route(context)
            if key is None:
                continue
            scheduler = table.schedulers.get(key)
            if scheduler is None:
                continue
            endpoint = scheduler.pick(context)
            # A retry leaves a pinned instance (sticky, same instance) for the others; a
            # subset keeps its retries inside itself.
            if not exclude or endpoint.id not in exclude or not table.routes.pins:
                return endpoint
        return self.fallback.pick(context)

    def choose(self, context: PickContext) -> Endpoint:
        return self._route(context)
