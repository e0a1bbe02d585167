"""LoadBalancer and its per-service state: snapshot → filters → scheduler → handle → feedback.

Readers never lock: the scheduler and the usable list are immutable objects swapped with a
single attribute assignment. Writers (registry publications, filter verdicts) serialize on a
per-service lock, rebuild, then swap.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from lbclient._channels import ChannelProviders
from lbclient._config import ServiceConfig
from lbclient._context import EMPTY_CONTEXT, PickContext
from lbclient._endpoint import Endpoint
from lbclient._exceptions import (
    ConfigurationError,
    LBError,
    NoAvailableInstance,
    RegistryUnavailable,
    ServiceNotFound,
)
from lbclient._handle import PickHandle
from lbclient._instance import InstanceEntry, ServiceInstance
from lbclient._listener import INSTANCE_STATES, LoadBalancerListener
from lbclient._outcome import Failure, Outcome
from lbclient._retry import RetryBudget
from lbclient.filters._base import Filter
from lbclient.filters._chain import build_chain
from lbclient.filters.panic import PanicThreshold
from lbclient.registry._base import Registry, Subscription
from lbclient.registry._uri import registry_from_uri
from lbclient.registry.static import StaticRegistry
from lbclient.schedulers import Scheduler, scheduler_class

log = logging.getLogger("lbclient")

NOT_FOUND_TTL = 5.0
"""Seconds a ServiceNotFound answer is remembered, so unknown hosts do not hammer the registry."""


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
        self.rng = rng or random.Random()
        self.retry_budget = RetryBudget(
            config.retry.budget_ratio, config.retry.budget_min_per_second
        )
        self.endpoints: dict[str, Endpoint] = {}
        self.usable: tuple[Endpoint, ...] = ()
        self.scheduler: Scheduler | None = None
        self._weights: list[float] = []
        self.filters: tuple[Filter, ...] = build_chain(config)
        judges = [i for i, f in enumerate(self.filters) if f.judges_health]
        self._health_span = (judges[0], judges[-1]) if judges else None
        self.panic = PanicThreshold(name, config.panic_threshold, fail_open=config.fail_open)
        self.updated_at: float | None = None
        self.registry_error: str | None = None
        self.stale_since: float | None = None
        self.subscription: Subscription | None = None
        self.closed = False
        self._scheduler_class = scheduler_class(config.scheduler)
        self._lock = threading.RLock()
        self._feedback = tuple(
            f for f in self.filters if type(f).on_complete is not Filter.on_complete
        )
        self.channels = ChannelProviders()
        """Sync gRPC channels of this service, lending their connections to its probes."""
        with self.channels.binding():  # a prober opened in bind() finds self.channels
            for f in self.filters:
                f.bind(self)

    # -- writers ---------------------------------------------------------------------------

    def publish(self, instances: Sequence[ServiceInstance]) -> None:
        """A new complete list from the registry (SnapshotSink)."""
        with self._lock:
            if self.closed:
                return
            current = {i.id: i for i in instances}
            added, removed = [], []
            for instance_id in list(self.endpoints):
                if instance_id not in current:
                    removed.append(self.endpoints.pop(instance_id))
            for instance_id, instance in current.items():
                endpoint = self.endpoints.get(instance_id)
                if endpoint is None:
                    endpoint = Endpoint(instance, decay=self.config.ewma_decay)
                    self.endpoints[instance_id] = endpoint
                    added.append(endpoint)
                elif endpoint.instance != instance:
                    endpoint.set_instance(instance)
            self.updated_at = time.time()
            stale_since, self.stale_since = self.stale_since, None
            self.registry_error = None
            if added or removed:
                log.info(
                    "%s: %d instance(s) (+%d, -%d)",
                    self.name,
                    len(self.endpoints),
                    len(added),
                    len(removed),
                )
                for f in self.filters:
                    f.on_membership(added, removed)
            self.invalidate()
        if self.listeners:
            self.emit("on_registry_update", instances)
            if stale_since is not None:
                self.emit("on_registry_recovered", time.time() - stale_since)

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

    def invalidate(self) -> None:
        """Recompute the usable list through the chain and rebuild the scheduler if it changed."""
        with self._lock:
            if self.closed:
                return
            candidates: Sequence[Endpoint] = list(self.endpoints.values())
            for endpoint in candidates:
                endpoint.weight = endpoint.instance.weight
            span = self._health_span
            before_health: Sequence[Endpoint] = candidates
            for index, f in enumerate(self.filters):
                if span is not None and index == span[0]:
                    before_health = candidates
                candidates = f.apply(candidates)
                if span is not None and index == span[1]:
                    candidates = self.panic.decide(before_health, candidates).endpoints
            usable = tuple(candidates)
            weights = [e.weight for e in usable]
            if self.scheduler is not None and usable == self.usable and weights == self._weights:
                return
            self._weights = weights
            self.scheduler = (
                self._scheduler_class(
                    usable, rng=self.rng, previous=self.scheduler, **self.config.scheduler_options
                )
                if usable
                else None
            )
            self.usable = usable
        self._notify(usable)

    def _notify(self, usable: tuple[Endpoint, ...]) -> None:
        instances = [e.instance for e in usable]
        for listener in self.listeners:
            try:
                listener.on_instances(self.name, instances)
            except Exception:
                log.exception("listener %r failed in on_instances", listener)
        if self.listeners:
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

    def pick(self, context: PickContext = EMPTY_CONTEXT, attempt: int = 1) -> PickHandle:
        """Choose an instance and count the attempt (number ``attempt``) as in flight."""
        scheduler = self.scheduler
        if scheduler is None:
            raise self._no_instance()
        endpoint = scheduler.pick(context)
        endpoint.begin()
        handle = PickHandle(self, endpoint, context, attempt)
        if self.listeners:
            self._notify_pick(handle)
        return handle

    def complete(self, handle: PickHandle, outcome: Outcome) -> None:
        endpoint = handle.endpoint
        endpoint.finish(outcome)
        for f in self._feedback:
            f.on_complete(endpoint, outcome)
        if self.listeners:
            self._notify_complete(handle, outcome)

    def _notify_pick(self, handle: PickHandle) -> None:
        for listener in self.listeners:
            try:
                listener.on_pick(self.name, handle.instance, handle.context)
            except Exception:
                log.exception("listener %r failed in on_pick", listener)
            try:
                listener.on_attempt(handle)
            except Exception:
                log.exception("listener %r failed in on_attempt", listener)

    def _notify_complete(self, handle: PickHandle, outcome: Outcome) -> None:
        for listener in self.listeners:
            try:
                listener.on_complete(self.name, handle.instance, outcome)
            except Exception:
                log.exception("listener %r failed in on_complete", listener)
            try:
                listener.on_attempt_end(handle, outcome)
            except Exception:
                log.exception("listener %r failed in on_attempt_end", listener)

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
            why = "the registry lists no instance"
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
        usable = {e.id for e in self.usable}
        now = time.time()
        instances = []
        for endpoint in list(self.endpoints.values()):
            row: dict[str, Any] = {
                "id": endpoint.id,
                "address": endpoint.instance.address,
                "zone": endpoint.instance.zone,
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
            "retry_budget": round(self.retry_budget.balance, 2),
            "retries_refused_by_budget": self.retry_budget.exhausted,
        }

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.scheduler = None
        if self.subscription is not None:
            self.subscription.close()
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
        services: Mapping[str, Mapping[str, Any] | ServiceConfig] | None = None,
        listeners: Iterable[LoadBalancerListener] = (),
        rng: random.Random | None = None,
        **defaults: Any,
    ) -> None:
        if isinstance(registry, str):
            registry = registry_from_uri(registry)
        elif isinstance(registry, Mapping):
            registry = StaticRegistry(registry)
        elif not isinstance(registry, Registry):
            raise ConfigurationError(
                f"registry must be a Registry, a URI or a mapping, got {type(registry).__name__}"
            )
        self.registry: Registry = registry
        self.defaults = ServiceConfig().merged(defaults)
        self._overrides = {
            name: self.defaults.merged(cfg) for name, cfg in (services or {}).items()
        }
        self.listeners = tuple(listeners)
        self._rng = rng
        self._services: dict[str, ServiceState] = {}
        self._not_found: dict[str, tuple[float, ServiceNotFound]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<LoadBalancer {self.registry!r} services={sorted(self._services)}>"

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
            self._not_found[service] = (time.monotonic() + NOT_FOUND_TTL, exc)
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
        remembered = self._not_found.get(service)
        if remembered is not None:
            if time.monotonic() < remembered[0]:
                raise remembered[1]
            self._not_found.pop(service, None)

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
            state.publish(instances)
            self._services[service] = state
        state.subscription = self.registry.watch(service, state)
        return state

    # -- visibility and lifecycle ----------------------------------------------------------

    @property
    def services(self) -> dict[str, ServiceState]:
        """The services in use so far, by name."""
        return dict(self._services)

    def stats(self, service: str | None = None) -> dict[str, Any]:
        """Per-service, per-instance counters: in flight, picks, successes, failures, latency."""
        if service is not None:
            state = self._services.get(service)
            return state.stats() if state else {}
        return {name: state.stats() for name, state in sorted(self._services.items())}

    def close(self) -> None:
        """Stop every watch and background check; further picks raise NoAvailableInstance."""
        with self._lock:
            self._closed = True
            states = list(self._services.values())
        for state in states:
            state.close()
        self.registry.close()

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
