"""LoadBalancer and its per-service state: snapshot → filters → scheduler → handle → feedback.

Readers never lock: the scheduler and the usable list are immutable objects swapped with a
single attribute assignment. Writers (registry publications, filter verdicts) serialize on a
per-service lock, rebuild, then swap. A verdict reached on the request path (an ejection seen
in ``on_complete``) defers the scheduler build to the timer thread, so no request pays for it:
until the swap the old scheduler serves, steering around the instances that just left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Unpack

from lbclient import _validate as check
from lbclient._answer import SkippedEntry, report_skipped
from lbclient._channels import ChannelProviders
from lbclient._config import ServiceConfig, ServiceSettings
from lbclient._context import EMPTY_CONTEXT, PickContext
from lbclient._endpoint import Endpoint
from lbclient._exceptions import (
    ConfigurationError,
    LBError,
    NoAvailableInstance,
    Overloaded,
    RegistryUnavailable,
    ServiceNotFound,
)
from lbclient._handle import PickHandle
from lbclient._hedge import Hedges
from lbclient._instance import InstanceEntry, ServiceInstance
from lbclient._limits import CallGate, Ticket
from lbclient._listener import INSTANCE_STATES, LoadBalancerListener
from lbclient._outcome import Failure, Outcome
from lbclient._retry import RetryBudget
from lbclient.filters._base import Filter
from lbclient.filters._chain import build_chain
from lbclient.filters.panic import PanicThreshold
from lbclient.registry._base import Registry, Subscription
from lbclient.registry._uri import registry_from_uri
from lbclient.registry.static import StaticRegistry
from lbclient.routing._settings import routers_for
from lbclient.routing._stage import RoutedScheduler, Shares
from lbclient.routing.locality import zone_aware_off, zone_shares
from lbclient.routing.priority import plan_priorities
from lbclient.schedulers import Scheduler, scheduler_class

log = logging.getLogger("lbclient")

NOT_FOUND_TTL = 5.0
"""Seconds a ServiceNotFound answer is remembered, so unknown hosts do not hammer the registry."""
NOT_FOUND_LIMIT = 1024
"""How many ServiceNotFound answers are remembered at most (least recently asked go first)."""


_RNG = random.Random()
"""The services' random source unless a balancer is given one: a ``random.Random`` is 2.5 KB
of state, a thousand services need not hold a thousand (its draws are thread-safe)."""


_Hook = tuple[LoadBalancerListener, str, Callable[..., object], bool]
"""A request-path hook: its listener, its name, the bound method, whether it takes the
handle (``on_attempt``, ``on_attempt_end``) rather than the service and instance."""


def _overridden(
    listeners: Sequence[LoadBalancerListener], by_instance: str, by_attempt: str
) -> tuple[_Hook, ...]:
    """Each of the two hooks a listener overrides, in listener order, the instance hook
    first: a hook left as ``LoadBalancerListener``'s no-op is never called."""
    hooks: list[_Hook] = []
    for listener in listeners:
        for name, per_attempt in ((by_instance, False), (by_attempt, True)):
            hook = getattr(listener, name, None)
            if hook is not None and getattr(hook, "__func__", hook) is not getattr(
                LoadBalancerListener, name
            ):
                hooks.append((listener, name, hook, per_attempt))
    return tuple(hooks)


class ServiceState:
    """One service inside a balancer: its instances, its chain, its scheduler, its counters."""

    def __init__(
        self,
        name: str,
        config: ServiceConfig,
        *,
        listeners: Sequence[LoadBalancerListener] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.listeners = tuple(listeners)
        self.listeners_read_requests = any(
            getattr(listener, "reads_request", True) for listener in self.listeners
        )
        """Whether a listener may look at the request in the pick context's attributes (else
        the transports can share one context per zone, as with no listener)."""
        self._starts = _overridden(self.listeners, "on_pick", "on_attempt")
        self._ends = _overridden(self.listeners, "on_complete", "on_attempt_end")
        """The request-path hooks listeners really override: an attempt calls only those
        (the exporters override one of each pair, so half the calls go)."""
        self.rng = rng or _RNG
        self.retry_budget = RetryBudget(
            config.retry.budget_ratio, config.retry.budget_min_per_second
        )
        self.hedges = Hedges(self.retry_budget)
        """Latencies and budgets of hedged requests (see lbclient._hedge)."""
        self.endpoints: dict[str, Endpoint] = {}
        self.usable: tuple[Endpoint, ...] = ()
        self.scheduler: Scheduler | None = None
        self._weights: list[float] = []
        self._leaving: frozenset[str] = frozenset()
        """Ids the serving scheduler still has but the usable list lost (a deferred build)."""
        self._changes = 0  # usable-list changes so far
        self._built = 0  # the change the serving scheduler was built for
        self._shares: Shares | None = None
        """How traffic is shared between priority levels or zones, when it is."""
        self._chain_shares: Shares | None = None  # the last chain's, until swapped in
        self.zone_aware_off: str | None = None
        """Why zone-aware routing (``zone_routing="aware"``) is off, when it is."""
        self._routers = routers_for(config)
        self.filters: tuple[Filter, ...] = build_chain(config)
        judges = [i for i, f in enumerate(self.filters) if f.judges_health]
        self._health_span = (judges[0], judges[-1]) if judges else None
        self.panic = PanicThreshold(name, config.panic_threshold, fail_open=config.fail_open)
        self.gate = _gate(name, config, self.emit if self.listeners else None)
        """Concurrency limits and circuit breaker (None when none is set: costs nothing)."""
        self.per_instance_limit = config.max_requests_per_instance
        self.per_instance_overflows = 0
        """Attempts refused because every instance was at ``max_requests_per_instance``."""
        self.updated_at: float | None = None
        self.registry_error: str | None = None
        """Why the registry's latest answer is not in force (unreachable, or not applicable)."""
        self.scheduler_error: str | None = None
        """Why the last rebuild asked by a filter failed (the previous scheduler serves)."""
        self._rejected: str | None = None
        self.skipped: frozenset[SkippedEntry] = frozenset()
        """The entries of the last registry answer that were malformed and left out."""
        self.stale_since: float | None = None
        self.subscription: Subscription | None = None
        self.closed = False
        self._scheduler_class = scheduler_class(config.scheduler)
        self._lock = threading.RLock()
        self._feedback = tuple(
            f for f in self.filters if type(f).on_complete is not Filter.on_complete
        )
        self._success_feedback = tuple(f for f in self._feedback if f.success_feedback)
        self.channels = ChannelProviders()
        """Sync gRPC channels of this service, lending their connections to its probes."""
        with self.channels.binding():  # a prober opened in bind() finds self.channels
            for f in self.filters:
                f.bind(self)

    # -- writers ---------------------------------------------------------------------------

    def publish(self, instances: Sequence[ServiceInstance]) -> None:
        """A new complete list from the registry (SnapshotSink). Never raises.

        Applied as a whole or not at all (see ``apply``). When it cannot be applied, the last
        good list and its scheduler stay in force and ``registry_error`` says what went wrong
        until the next good answer applies.
        """
        try:
            self.apply(instances)
        except Exception as exc:
            self._reject(instances, exc)

    def apply(self, instances: Sequence[ServiceInstance]) -> None:
        """``publish``, raising what prevented the answer from applying.

        The new membership and the scheduler built over it are swapped in together, once
        the scheduler was built. When anything on the way fails (a scheduler that cannot take
        these weights or ids, a filter), everything is put back as it was before raising.
        """
        with self._lock:
            if self.closed:
                return
            self.skipped = report_skipped(self.name, instances, self.skipped)
            previous = self.endpoints
            changed: list[tuple[Endpoint, ServiceInstance]] = []
            added: list[Endpoint] = []
            removed: list[Endpoint] = []
            told = 0  # filters told of the membership change, to be told of its undoing
            try:
                current = {i.id: i for i in instances}
                endpoints: dict[str, Endpoint] = {}
                known = previous.get
                for instance_id, instance in current.items():
                    endpoint = known(instance_id)
                    if endpoint is None:
                        endpoint = Endpoint(instance, decay=self.config.ewma_decay)
                        added.append(endpoint)
                    # The same object again (a static list, a cached entry): skip the compare.
                    elif endpoint.instance is not instance and endpoint.instance != instance:
                        changed.append((endpoint, endpoint.instance))
                        endpoint.set_instance(instance)
                    endpoints[instance_id] = endpoint
                if len(endpoints) - len(added) < len(previous):
                    removed = [e for i, e in previous.items() if i not in current]
                if added or removed:
                    for f in self.filters:
                        f.on_membership(added, removed)
                        told += 1
                usable = self._rebuild(endpoints)
            except BaseException:  # the membership was not swapped: undo the rest
                for endpoint, instance in changed:
                    endpoint.set_instance(instance)
                self._restore_weights()
                for f in self.filters[:told]:
                    try:
                        f.on_membership(removed, added)
                    except Exception:
                        log.exception("filter %r failed to undo a membership change", f)
                raise
            self.updated_at = time.time()
            stale_since, self.stale_since = self.stale_since, None
            if self._rejected is not None:
                log.info("%s: the registry's answers apply again", self.name)
                self._rejected = None
            self.registry_error = None
            if added or removed:
                log.info(
                    "%s: %d instance(s) (+%d, -%d)",
                    self.name,
                    len(self.endpoints),
                    len(added),
                    len(removed),
                )
        if usable is not None:
            self._notify(usable)
        if self.listeners:
            self.emit("on_registry_update", instances)
            if stale_since is not None:
                self.emit("on_registry_recovered", time.time() - stale_since)

    def _reject(self, instances: Sequence[ServiceInstance], error: Exception) -> None:
        """An answer that could not be applied: say why (logged once per distinct reason)."""
        reason = f"{type(error).__name__}: {error}"
        try:
            what = f"an answer of {len(instances)} instance(s)"
        except Exception:
            what = "an answer"
        with self._lock:
            self.registry_error = (
                f"{what} could not be applied ({reason}); keeping the last good list of "
                f"{len(self.endpoints)} instance(s)"
            )
            if self.stale_since is None:
                self.stale_since = time.time()
            if self._rejected == reason:
                return
            self._rejected = reason
        if self.listeners:
            self.emit("on_registry_error", error)
        log.error("%s: %s", self.name, self.registry_error)
        log.debug("%s: why the answer could not be applied", self.name, exc_info=error)

    def heartbeat(self, instance_id: str) -> None:
        """A sign of life from outside the request path: a registry heartbeat (a Consul TTL
        check passing) or a passing probe. Registries that learn of liveness call this."""
        endpoint = self.endpoints.get(instance_id)
        if endpoint is None:
            return
        for f in self.filters:
            f.on_heartbeat(endpoint)

    def fail(self, error: BaseException) -> None:
        """The registry could not be read: keep the last good list, mark it stale."""
        self.registry_error = f"{type(error).__name__}: {error}"
        if self.stale_since is None:
            self.stale_since = time.time()
        if self.listeners:
            self.emit("on_registry_error", error)

    def invalidate(self, defer: Callable[[Callable[[], None]], object] | None = None) -> None:
        """Recompute the usable list through the chain and rebuild the scheduler if it changed.

        Called by filters when their verdict changes. ``defer(build)`` runs the scheduler
        build elsewhere (the caller is a request thread): ``usable`` changes now, and the
        current scheduler serves, steering around the instances that left, until the build
        swaps it. If the new scheduler cannot be built, the last one stays in force and
        ``scheduler_error`` says why.
        """
        with self._lock:
            if self.closed:
                return
            try:
                if defer is not None and self.scheduler is not None:
                    usable = self._defer(defer)
                else:
                    usable = self._rebuild()
            except Exception as exc:
                self._scheduler_failed(exc)
                return
        if usable is not None:
            self._notify(usable)

    def _scheduler_failed(self, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if self.scheduler_error != reason:
            log.error(
                "%s: cannot rebuild the %s scheduler, keeping the last one: %s",
                self.name,
                self._scheduler_class.name,
                reason,
            )
        self.scheduler_error = reason

    def _chain(self, members: Mapping[str, Endpoint]) -> tuple[tuple[Endpoint, ...], list[float]]:
        """Run the filter chain over a membership: the usable list and its weights."""
        try:
            candidates: Sequence[Endpoint] = list(members.values())
            for endpoint in candidates:
                endpoint.weight = endpoint.instance.weight
            span = self._health_span
            before_health: Sequence[Endpoint] = candidates
            levels = len({e.instance.priority for e in candidates}) > 1
            loads: Mapping[int, int] = {}  # per priority level, when there are several
            for index, f in enumerate(self.filters):
                if span is not None and index == span[0]:
                    before_health = candidates
                candidates = f.apply(candidates)
                if span is not None and index == span[1]:
                    if levels:  # Envoy: spill-over and panic per priority level
                        candidates, loads = self._levels(before_health, candidates)
                    else:
                        candidates = self.panic.decide(before_health, candidates).endpoints
            if levels and span is None:
                candidates, loads = self._levels(candidates, candidates)
        except BaseException:
            self._restore_weights()
            raise
        usable = tuple(candidates)
        self._chain_shares = self._share(usable, loads if levels else None)
        return usable, [e.weight for e in usable]

    def _share(self, usable: Sequence[Endpoint], loads: Mapping[int, int] | None) -> Shares | None:
        """Priority levels share traffic when instances have several (``loads``); else, with
        zone-aware routing, zones do (Envoy: zone-aware routing applies within one level)."""
        if loads is not None:
            return Shares("priority", loads)
        config = self.config
        if config.zone_routing != "aware" or config.zone is None:
            return None
        off = (
            "the service is in panic"
            if self.panic.panicking
            else zone_aware_off(usable, config.zone, config.zone_min_cluster_size)
        )
        if off != self.zone_aware_off:  # Envoy's can stay off unseen (envoy#8616): say so
            if off is None:
                log.info("%s: zone-aware routing on", self.name)
            else:
                log.warning("%s: zone-aware routing off: %s", self.name, off)
            self.zone_aware_off = off
        if off is not None:
            return None
        shares = zone_shares(usable, config.zone, config.caller_zones, config.zone_min_cluster_size)
        return None if shares is None else Shares("zone", shares)

    def _levels(
        self, everyone: Sequence[Endpoint], healthy: Sequence[Endpoint]
    ) -> tuple[Sequence[Endpoint], Mapping[int, int]]:
        plan = plan_priorities(
            everyone,
            healthy,
            factor=self.config.overprovisioning_factor,
            threshold=self.panic.threshold,
            fail_open=self.panic.fail_open,
        )
        return plan.endpoints, plan.loads

    def _build(self, usable: tuple[Endpoint, ...]) -> Scheduler | None:
        """The service's scheduler over ``usable``; behind the routing stage when rules are
        configured or several priority levels share the traffic (else nothing in between)."""
        if not usable:
            return None
        shares = self._chain_shares
        if not self._routers and shares is None:
            return self._scheduler_class(
                usable, rng=self.rng, previous=self.scheduler, **self.config.scheduler_options
            )
        return RoutedScheduler(
            usable,
            base=self._scheduler_class,
            options=self.config.scheduler_options,
            routers=self._routers,
            shares=shares,
            rng=self.rng,
            previous=self.scheduler,
        )

    def _rebuild(self, endpoints: dict[str, Endpoint] | None = None) -> tuple[Endpoint, ...] | None:
        """Run the chain over the membership, build the scheduler, then swap them in together.

        ``endpoints`` is a new membership to take (default: the current one). Returns the new
        usable list, or None when it did not change. Raises when the chain or the scheduler
        fails, with the membership, the usable list, its weights and the scheduler untouched.
        The caller holds the lock.
        """
        members = self.endpoints if endpoints is None else endpoints
        usable, weights = self._chain(members)
        same = (
            self.scheduler is not None
            and usable == self.usable
            and weights == self._weights
            and self._chain_shares == self._shares
        )
        scheduler = self.scheduler
        if not same:
            try:
                scheduler = self._build(usable)
            except BaseException:
                self._restore_weights()
                raise
        # Built: swap in (the request path reads only ``scheduler``, so it goes first).
        self.scheduler = scheduler
        self.usable = usable
        self._weights = weights
        self._shares = self._chain_shares
        self.endpoints = members
        self.scheduler_error = None
        if not same:
            self._changes += 1
            self._built = self._changes  # a deferred build still pending is now moot
            self._leaving = frozenset()
        return None if same else usable

    def _defer(self, defer: Callable[[Callable[[], None]], object]) -> tuple[Endpoint, ...] | None:
        """The usable list changes now; the scheduler build runs through ``defer``."""
        usable, weights = self._chain(self.endpoints)
        if (
            usable == self.usable
            and weights == self._weights
            and self._chain_shares == self._shares
        ):
            return None
        if not usable:  # nothing to build: fail fast now rather than serve the leavers
            return self._rebuild()
        assert self.scheduler is not None
        kept = {e.id for e in usable}
        self._leaving = frozenset(e.id for e in self.scheduler.endpoints if e.id not in kept)
        self.usable = usable
        self._weights = weights
        self._changes += 1
        defer(self._build_deferred)
        return usable

    def _build_deferred(self) -> None:
        """Build the scheduler for the usable list in force and swap it in (if still needed)."""
        with self._lock:
            if self.closed or self._built == self._changes:  # a later build got there first
                return
            try:
                scheduler = self._build(self.usable)
            except Exception as exc:  # the old scheduler serves on, steering around leavers
                self._scheduler_failed(exc)
                return
            self.scheduler = scheduler
            self._shares = self._chain_shares
            self._built = self._changes
            self._leaving = frozenset()
            self.scheduler_error = None

    def _loads_by(self, by: str) -> dict[Any, int]:
        """Traffic shares in force by priority level or zone (empty: not shared that way)."""
        shares = self._shares
        return dict(shares.shares) if shares is not None and shares.by == by else {}

    def _restore_weights(self) -> None:
        """Give the endpoints of the scheduler in force back the weights it was built with."""
        for endpoint, weight in zip(self.usable, self._weights, strict=False):
            endpoint.weight = weight

    def _notify(self, usable: tuple[Endpoint, ...]) -> None:
        if not self.listeners:
            return
        instances = [e.instance for e in usable]
        for listener in self.listeners:
            try:
                listener.on_instances(self.name, instances)
            except Exception:
                log.exception("listener %r failed in on_instances", listener)
        self.emit("on_instance_states", self.instance_states(usable))

    def emit(self, hook: str, *args: Any) -> None:
        """Call ``hook(service, *args)`` on every listener; a failing one is logged, never
        raised. Callers check ``self.listeners`` first, so no listener means no cost."""
        for listener in self.listeners:
            try:
                getattr(listener, hook)(self.name, *args)
            except Exception:
                log.exception("listener %r failed in %s", listener, hook)

    def instance_states(self, usable: Sequence[Endpoint] | None = None) -> dict[str, int]:
        """How many instances are in each state (``LoadBalancerListener.on_instance_states``)."""
        counts = dict.fromkeys(INSTANCE_STATES, 0)
        for state in self.states_by_instance(usable).values():
            counts[state] += 1
        return counts

    def states_by_instance(self, usable: Sequence[Endpoint] | None = None) -> dict[str, str]:
        """Each instance's state by id: ``usable``, else why not (ejected, unhealthy, ...)."""
        ids = {e.id for e in (self.usable if usable is None else usable)}
        states: dict[str, str] = {}
        for endpoint in list(self.endpoints.values()):
            if endpoint.id in ids:
                states[endpoint.id] = "usable"
                continue
            seen: dict[str, Any] = {}
            for f in self.filters:
                seen.update(f.stats(endpoint))
            if seen.get("ejected"):
                states[endpoint.id] = "ejected"
            elif seen.get("healthy") is False:
                states[endpoint.id] = "unhealthy"
            elif seen.get("silent"):
                states[endpoint.id] = "silent"
            else:
                states[endpoint.id] = "filtered"
        return states

    # -- the request path ------------------------------------------------------------------

    def pick(
        self, context: PickContext = EMPTY_CONTEXT, attempt: int = 1, ticket: Ticket | None = None
    ) -> PickHandle:
        """Choose an instance and count the attempt (number ``attempt``) as in flight, as
        part of the call admitted with ``ticket`` if the service has limits or a breaker."""
        leaving = self._leaving  # read before the scheduler: it is cleared after the swap
        scheduler = self.scheduler
        if scheduler is None:
            raise self._no_instance()
        among = (
            dataclasses.replace(context, exclude=context.exclude | leaving) if leaving else context
        )
        endpoint = scheduler.pick(among)
        if self.per_instance_limit is None:
            endpoint.begin()
        elif not endpoint.try_begin(self.per_instance_limit):
            endpoint = self._pick_not_full(scheduler, among, endpoint, self.per_instance_limit)
        handle = PickHandle(self, endpoint, context, attempt, ticket)
        if self.listeners:
            self._notify_pick(handle)
        return handle

    def _pick_not_full(
        self, scheduler: Scheduler, context: PickContext, full: Endpoint, limit: int
    ) -> Endpoint:
        """Pick again as if the full instances were excluded (like ejected ones): at most
        once per instance, then Overloaded when every one is at ``limit``."""
        skipped = {full.id}
        for _ in range(len(scheduler.endpoints)):
            retry = dataclasses.replace(context, exclude=context.exclude | skipped)
            endpoint = scheduler.pick(retry)
            if endpoint.id not in skipped and endpoint.try_begin(limit):
                return endpoint
            if endpoint.id in skipped:  # the scheduler found nothing else: all are full
                break
            skipped.add(endpoint.id)
        for endpoint in scheduler.endpoints:  # a scheduler may not walk every instance
            if endpoint.id not in skipped and endpoint.try_begin(limit):
                return endpoint
        self.per_instance_overflows += 1
        if self.listeners:
            self.emit("on_refused", "max_requests_per_instance")
        raise Overloaded(
            f"every usable instance of {self.name!r} has max_requests_per_instance={limit} "
            "requests in flight; the request was refused without being sent",
            limit="max_requests_per_instance",
            service=self.name,
        )

    def complete(self, handle: PickHandle, outcome: Outcome) -> None:
        endpoint = handle.endpoint
        endpoint.finish(outcome)
        for f in self._feedback:
            f.on_complete(endpoint, outcome)
        if self.listeners:
            self._notify_complete(handle, outcome)

    def succeeded(self, handle: PickHandle, latency: float, now: float, status: int | None) -> None:
        """``complete`` for an attempt that succeeded (and holds no admission ticket): the
        request path's shortcut, building an Outcome only for filters and listeners that read
        one."""
        endpoint = handle.endpoint
        endpoint.succeeded(latency, now)
        if self._success_feedback or self._ends:
            outcome = Outcome(latency, None, False, status)
            for f in self._success_feedback:
                f.on_complete(endpoint, outcome)
            if self._ends:
                self._notify_complete(handle, outcome)

    def _notify_pick(self, handle: PickHandle) -> None:
        for listener, name, hook, per_attempt in self._starts:
            try:
                if per_attempt:
                    hook(handle)
                else:
                    hook(self.name, handle.instance, handle.context)
            except Exception:
                log.exception("listener %r failed in %s", listener, name)

    def _notify_complete(self, handle: PickHandle, outcome: Outcome) -> None:
        for listener, name, hook, per_attempt in self._ends:
            try:
                if per_attempt:
                    hook(handle, outcome)
                else:
                    hook(self.name, handle.instance, outcome)
            except Exception:
                log.exception("listener %r failed in %s", listener, name)

    def retried(
        self, attempt: int, failure: Failure | None, *, granted: bool, refused: bool
    ) -> None:
        """Tell listeners a failed attempt is resent (``granted``), or that the retry budget
        said no (``refused``); nothing when the policy itself does not retry it."""
        if self.listeners and (granted or refused):
            self.emit("on_retry" if granted else "on_retry_refused", attempt, failure)

    def _no_instance(self) -> NoAvailableInstance:
        if self.closed:
            return NoAvailableInstance(
                f"the load balancer is closed (service {self.name!r})", service=self.name
            )
        total = len(self.endpoints)
        if total == 0:
            why = (
                "no answer of the registry could be applied yet"
                if self._rejected
                else "the registry lists no instance"
            )
            if self.registry_error:
                why += f" (last registry error: {self.registry_error})"
        elif self.panic.panicking and not self.panic.fail_open:
            why = (
                f"fewer than {self.panic.threshold:.0%} of its {total} instance(s) are healthy "
                "and fail_open is off (panic threshold)"
            )
        else:
            why = f"all {total} instance(s) are unhealthy or ejected"
        return NoAvailableInstance(
            f"no instance of {self.name!r} can take the request: {why}; check the service is "
            "running and registered, or see LoadBalancer.stats()",
            service=self.name,
        )

    # -- visibility and lifecycle ----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:  # one consistent view: never a membership half swapped in
            usable = {e.id for e in self.usable}
            members = list(self.endpoints.values())
        now = time.time()
        instances = []
        for endpoint in members:
            row: dict[str, Any] = {
                "id": endpoint.id,
                "address": endpoint.instance.address,
                "zone": endpoint.instance.zone,
                "priority": endpoint.instance.priority,
                "usable": endpoint.id in usable,
                "weight": endpoint.weight,
                "in_flight": endpoint.in_flight,
                "picks": endpoint.picks,
                "successes": endpoint.successes,
                "failures": endpoint.failures,
                "latency_ewma_ms": round(endpoint.latency * 1000, 3),
            }
            for f in self.filters:
                row.update(f.stats(endpoint))
            instances.append(row)
        return {
            "service": self.name,
            "scheduler": self._scheduler_class.name,
            "instances": instances,
            "usable": len(usable),
            "panic": self.panic.panicking,
            "updated_at": self.updated_at,
            "stale_seconds": None if self.stale_since is None else now - self.stale_since,
            "registry_error": self.registry_error,
            "scheduler_error": self.scheduler_error,
            "skipped_entries": len(self.skipped),
            "retry_budget": round(self.retry_budget.balance, 2),
            "retries_refused_by_budget": self.retry_budget.exhausted,
            "priority_loads": self._loads_by("priority"),
            "zone_shares": self._loads_by("zone"),
            "zone_aware_off": self.zone_aware_off,
            "limits": self._limit_stats(),
            **self.hedges.stats(),
        }

    def _limit_stats(self) -> dict[str, Any] | None:
        """Counters of the limits and the breaker (None when none is configured)."""
        if self.gate is None and self.per_instance_limit is None:
            return None
        row: dict[str, Any] = self.gate.stats() if self.gate is not None else {}
        if self.per_instance_limit is not None:
            row["refused_per_instance"] = self.per_instance_overflows
        return row

    def attach(self, subscription: Subscription) -> None:
        """Take the watch that feeds this state; a state closed meanwhile closes it at once
        (``close()`` racing the first pick must not leave a watch running)."""
        with self._lock:
            if not self.closed:
                self.subscription = subscription
                return
        subscription.close()

    def close(self) -> None:
        """Stop the watch and the filters' background work; idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self.scheduler = None
            subscription, self.subscription = self.subscription, None
        if subscription is not None:
            try:
                subscription.close()
            except Exception:
                log.exception("%s: the registry watch failed to close", self.name)
        for f in self.filters:
            try:
                f.close()
            except Exception:
                log.exception("filter %r failed to close", f)


RegistryLike = Registry | str | Mapping[str, Iterable[InstanceEntry] | str]


class LoadBalancer:
    """Client-side load balancing over a registry, shared by every transport and channel.

    >>> import lbclient
    >>> lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:8001", "127.0.0.1:8002"]},
    ...                            scheduler="least_request")
    >>> with lb.pick("orders") as handle:
    ...     handle.instance.port in (8001, 8002)
    True
    >>> lb.close()

    ``registry`` is a Registry, a URI (``"consul://127.0.0.1:8500"``) or a mapping for a
    StaticRegistry. Settings given as keywords (``scheduler``, ``retry``, ``filters``, ...;
    see ServiceConfig) are the defaults; ``services`` overrides them per service. A service's
    instances are resolved on first use, then watched in the background.
    """

    def __init__(
        self,
        registry: RegistryLike,
        *,
        services: Mapping[str, ServiceSettings | ServiceConfig] | None = None,
        listeners: Iterable[LoadBalancerListener] = (),
        rng: random.Random | None = None,
        **defaults: Unpack[ServiceSettings],
    ) -> None:
        # Settings first: a mistake there must not leave a registry client behind.
        self.defaults = ServiceConfig().merged(defaults)
        if services is None:
            services = {}
        check.mapping("services", services, example="{'search': {'scheduler': 'ring_hash'}}")
        self._overrides = {
            check.text("services key", name): self.defaults.merged(cfg, f"services[{name!r}]")
            for name, cfg in services.items()
        }
        if isinstance(listeners, (str, bytes)) or not isinstance(listeners, Iterable):
            raise check.invalid("listeners", listeners, "a list of LoadBalancerListener")
        self.listeners = tuple(listeners)
        if rng is not None:
            check.instance_of("rng", rng, random.Random, "random.Random(42)")
        self._rng = rng
        if isinstance(registry, str):
            registry = registry_from_uri(registry)
        elif isinstance(registry, Mapping):
            registry = StaticRegistry(registry)
        elif not isinstance(registry, Registry):
            raise ConfigurationError(
                f"registry must be a Registry, a URI or a mapping, got {type(registry).__name__}"
            )
        self.registry: Registry = registry
        self._services: dict[str, ServiceState] = {}
        self._not_found: OrderedDict[str, tuple[float, str]] = OrderedDict()
        """Unknown service -> (remembered until, the registry's message); a bounded LRU."""
        self._lock = threading.Lock()
        self._closed = False
        # Dropped without close(): stop the watches and filters when collected, as an unclosed
        # file closes itself, with a ResourceWarning. Background threads hold service states,
        # never the balancer, so nothing they run keeps it alive.
        self._finalizer = weakref.finalize(self, _collected, self._services, self.registry)
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        return f"<LoadBalancer {self.registry!r} services={sorted(self._services)}>"

    @property
    def configured_services(self) -> tuple[str, ...]:
        """The services given settings of their own (``services=``)."""
        return tuple(self._overrides)

    def config_for(self, service: str) -> ServiceConfig:
        """The effective configuration of ``service`` (defaults merged with its overrides)."""
        return self._overrides.get(service, self.defaults)

    # -- the request path ------------------------------------------------------------------

    def pick(self, service: str, context: PickContext | None = None) -> PickHandle:
        """Pick an instance of ``service``; the first call for a service resolves it (blocking).

        Raises ServiceNotFound, NoAvailableInstance or RegistryUnavailable, never hangs.
        """
        state = self._services.get(service) or self.service(service)
        return state.pick(context or EMPTY_CONTEXT)

    async def apick(self, service: str, context: PickContext | None = None) -> PickHandle:
        """``pick`` for asyncio code: the first resolution does not block the event loop."""
        state = self._services.get(service) or await self.aservice(service)
        return state.pick(context or EMPTY_CONTEXT)

    def service(self, name: str) -> ServiceState:
        """The state of ``name``, resolved on first use (blocking)."""
        state = self._services.get(name)
        if state is not None:
            return state
        self._check_open(name)
        with self._translate(name):
            instances = self.registry.resolve(name)
        return self._open(name, instances)

    async def aservice(self, name: str) -> ServiceState:
        """``service`` for asyncio code."""
        state = self._services.get(name)
        if state is not None:
            return state
        self._check_open(name)
        with self._translate(name):
            instances = await self.registry.aresolve(name)
        return self._open(name, instances)

    @contextlib.contextmanager
    def _translate(self, service: str) -> Iterator[None]:
        """Remember ServiceNotFound for a while; turn foreign registry errors into ours."""
        try:
            yield
        except ServiceNotFound as exc:
            with self._lock:
                self._not_found[service] = (time.monotonic() + NOT_FOUND_TTL, str(exc))
                self._not_found.move_to_end(service)
                while len(self._not_found) > NOT_FOUND_LIMIT:
                    self._not_found.popitem(last=False)
            raise
        except LBError:
            raise
        except Exception as exc:
            raise RegistryUnavailable(
                f"cannot resolve {service!r}: the registry {self.registry!r} failed with "
                f"{type(exc).__name__}: {exc}; check that it is reachable",
                service=service,
            ) from exc

    def _check_open(self, service: str) -> None:
        if self._closed:
            raise NoAvailableInstance(
                f"the load balancer is closed (service {service!r})", service=service
            )
        if service not in self._not_found:
            return
        with self._lock:
            remembered = self._not_found.get(service)
            if remembered is None:
                return
            if time.monotonic() >= remembered[0]:
                del self._not_found[service]
                return
            self._not_found.move_to_end(service)
        # A fresh exception each time: re-raising one object would grow its traceback.
        raise ServiceNotFound(remembered[1], service=service)

    def _open(self, service: str, instances: Sequence[ServiceInstance]) -> ServiceState:
        with self._lock:
            state = self._services.get(service)
            if state is not None:
                return state
            if self._closed:
                raise NoAvailableInstance(
                    f"the load balancer is closed (service {service!r})", service=service
                )
            state = ServiceState(
                service, self.config_for(service), listeners=self.listeners, rng=self._rng
            )
            try:
                state.apply(instances)
            except ConfigurationError:  # a setting that cannot work: tell the caller now
                state.close()
                raise
            except Exception as exc:  # kept with the reason: the watch brings the next answer
                state._reject(instances, exc)
            self._services[service] = state
        state.attach(self.registry.watch(service, state))
        return state

    # -- visibility and lifecycle ----------------------------------------------------------

    @property
    def services(self) -> dict[str, ServiceState]:
        """The services in use so far, by name."""
        return dict(self._services)

    def stats(self, service: str | None = None) -> dict[str, Any]:
        """Per-service, per-instance counters: in flight, picks, successes, failures, latency.

        ``stats(service)`` resolves the service as ``pick`` does (an unknown one raises
        ServiceNotFound); ``stats()`` covers the services in use so far.
        """
        if service is not None:
            return (self._services.get(service) or self.service(service)).stats()
        return {name: state.stats() for name, state in sorted(self._services.items())}

    def close(self) -> None:
        """Stop every watch and background check; further picks raise NoAvailableInstance."""
        with self._lock:
            self._closed = True
        self._finalizer.detach()
        _shut(self._services, self.registry)

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> LoadBalancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> LoadBalancer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _gate(service: str, config: ServiceConfig, emit: Callable[..., None] | None) -> CallGate | None:
    """The service's admission gate, or None when it has no limit and no breaker."""
    if (
        config.max_requests is None
        and config.max_retries is None
        and config.circuit_breaker is None
    ):
        return None
    return CallGate(
        service,
        max_requests=config.max_requests,
        max_pending=config.max_pending,
        pending_timeout=config.pending_timeout,
        max_retries=config.max_retries,
        circuit_breaker=config.circuit_breaker,
        emit=emit,
    )


def _shut(services: Mapping[str, ServiceState], registry: Registry) -> None:
    """Close every service state (its watch, its filters), then the registry."""
    for state in list(services.values()):
        state.close()
    registry.close()


def _collected(services: Mapping[str, ServiceState], registry: Registry) -> None:
    """A LoadBalancer was garbage-collected without ``close()``: warn, and stop its work."""
    try:
        warnings.warn(
            f"LoadBalancer over {registry!r} (services {sorted(services)}) was never closed; "
            "its watches and checks were stopped when it was collected. Call close() or use "
            "it as a context manager",
            ResourceWarning,
            stacklevel=2,
        )
    finally:
        try:
            _shut(services, registry)
        except Exception:  # nobody to raise to: the owner is gone
            log.exception("closing a collected LoadBalancer over %r failed", registry)
