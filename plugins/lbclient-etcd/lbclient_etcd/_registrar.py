"""EtcdRegistrar: put this process's instance under a lease and keep the lease alive.

The lease is the heartbeat: when the process dies, keepalives stop, the lease expires after
``ttl`` seconds and etcd deletes the key, so every watcher drops the instance. The decisions
(what to call next, how long to wait, what a lost lease means) live in ``RegistrarCore``,
which does no I/O; ``EtcdRegistrar`` (a thread) and ``AsyncEtcdRegistrar`` (a task) are small
drivers around it, as tenacity drives its retry state from a sync and an async loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from urllib.parse import urlsplit

from lbclient import ConfigurationError, LBError, ServiceInstance
from lbclient_etcd._protocol import Json, LeaseNotFound, encode_instance, put_request
from lbclient_etcd._registry import EtcdRegistry

log = logging.getLogger("lbclient.etcd")

Call = tuple[str, Json, str]
"""(gateway path, JSON body, what it is for error messages)."""


class RegistrarCore:
    """The registrar's state machine: grant a lease, put the key on it, keep it alive.

    A keepalive answered without a TTL, or a "lease not found" error, means the lease expired
    (the process was paused, or etcd was down longer than the TTL): start over with a new
    lease. Other errors are retried with jitter within a third of the TTL, so a short etcd
    outage does not cost the registration.
    """

    def __init__(
        self, key: bytes, instance: ServiceInstance, ttl: float, rng: random.Random | None = None
    ) -> None:
        if ttl < 2:
            raise ConfigurationError(f"etcd lease ttl must be >= 2 seconds, got {ttl}")
        self.key = key
        self.instance = instance
        self.value = encode_instance(instance)
        self.ttl = max(2, round(ttl))
        self.interval = self.ttl / 3
        self.lease: int | None = None
        self.registered = False
        self.errors = 0
        self._rng = rng or random.Random()

    @property
    def name(self) -> str:
        return self.key.decode(errors="replace")

    def next_call(self) -> Call:
        if self.lease is None:
            return "/v3/lease/grant", {"TTL": str(self.ttl)}, f"lease grant for {self.name}"
        if not self.registered:
            return "/v3/kv/put", put_request(self.key, self.value, self.lease), f"put {self.name}"
        return "/v3/lease/keepalive", {"ID": str(self.lease)}, f"keepalive of {self.name}"

    def answered(self, call: Call, answer: Json) -> float:
        """Record an answer; return the seconds to wait before the next call."""
        if self.errors:
            log.info("etcd registrar %s: etcd reachable again", self.name)
            self.errors = 0
        path = call[0]
        if path.endswith("/grant"):
            self.lease = int(answer["ID"])
            return 0.0
        if path.endswith("/put"):
            self.registered = True
            log.info(
                "etcd registrar: registered %s (lease %x, ttl %ds)",
                self.name,
                self.lease or 0,
                self.ttl,
            )
            return self.interval
        if int(answer.get("result", {}).get("TTL") or 0) <= 0:
            return self._lost()
        return self.interval

    def failed(self, error: LBError) -> float:
        """Record a failed call; return the seconds to wait before the next one."""
        if isinstance(error, LeaseNotFound):
            return self._lost()
        self.errors += 1
        if self.errors == 1:
            log.warning("etcd registrar %s: %s; retrying", self.name, error)
        return self._rng.uniform(0.05, max(0.1, min(self.interval, 0.1 * 2**self.errors)))

    def _lost(self) -> float:
        log.warning(
            "etcd registrar %s: lease %x expired; registering again", self.name, self.lease or 0
        )
        self.lease = None
        self.registered = False
        return 0.0

    def revoke_call(self) -> Call | None:
        if self.lease is None:
            return None
        return "/v3/lease/revoke", {"ID": str(self.lease)}, f"lease revoke for {self.name}"


def _core(registry: EtcdRegistry | str, instance: ServiceInstance, ttl: float) -> RegistrarCore:
    return RegistrarCore(
        registry_of(registry).key_prefix(instance.service) + instance.id.encode(), instance, ttl
    )


def registry_of(registry: EtcdRegistry | str) -> EtcdRegistry:
    if isinstance(registry, str):
        parts = urlsplit(registry)
        if parts.scheme != "etcd":
            raise ConfigurationError(
                f"{registry!r} is not an etcd URI; expected e.g. 'etcd://127.0.0.1:2379'"
            )
        return EtcdRegistry.from_uri(parts)
    return registry


class EtcdRegistrar:
    """Register ``instance`` in etcd while this object is open (a keepalive thread).

    >>> from lbclient import ServiceInstance                              # doctest: +SKIP
    >>> me = ServiceInstance("orders", "10.0.0.5", 8080, zone="eu-1")       # doctest: +SKIP
    >>> with EtcdRegistrar("etcd://127.0.0.1:2379", me, ttl=10):           # doctest: +SKIP
    ...     serve_forever()

    Entering registers at once and raises if etcd cannot be reached; leaving (or ``close``)
    revokes the lease, so watchers drop the instance without waiting for the TTL.
    """

    def __init__(
        self, registry: EtcdRegistry | str, instance: ServiceInstance, *, ttl: float = 10.0
    ) -> None:
        self.registry = registry_of(registry)
        self._owns_registry = isinstance(registry, str)  # built here, so closed here
        self.core = _core(self.registry, instance, ttl)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"EtcdRegistrar({self.core.name!r}, ttl={self.core.ttl})"

    def _step(self) -> float:
        call = self.core.next_call()
        try:
            answer = self.registry.http.call(*call)
        except LBError as exc:
            return self.core.failed(exc)
        return self.core.answered(call, answer)

    def start(self) -> EtcdRegistrar:
        """Register now (raising RegistryUnavailable if etcd cannot be reached), then keep
        the lease alive in a daemon thread."""
        if self._thread is not None:
            return self
        while not self.core.registered:
            call = self.core.next_call()
            self.core.answered(call, self.registry.http.call(*call))
        self._thread = threading.Thread(
            target=self._run, name=f"lbclient-etcd-registrar-{self.core.name}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        wait = self.core.interval
        while not self._stop.wait(wait):
            wait = self._step()

    def close(self) -> None:
        """Stop the keepalives and revoke the lease (best effort: it expires anyway)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.registry.http.timeout + 1)
        call = self.core.revoke_call()
        if call is not None:
            try:
                self.registry.http.call(*call)
            except LBError as exc:
                log.warning("etcd registrar %s: could not revoke: %s", self.core.name, exc)
            self.core.lease = None
            self.core.registered = False
        if self._owns_registry:
            self.registry.close()

    def __enter__(self) -> EtcdRegistrar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEtcdRegistrar:
    """``EtcdRegistrar`` for asyncio: the keepalives run as a task of the running loop.

    >>> async with AsyncEtcdRegistrar("etcd://127.0.0.1:2379", me):      # doctest: +SKIP
    ...     await serve()
    """

    def __init__(
        self, registry: EtcdRegistry | str, instance: ServiceInstance, *, ttl: float = 10.0
    ) -> None:
        self.registry = registry_of(registry)
        self._owns_registry = isinstance(registry, str)  # built here, so closed here
        self.core = _core(self.registry, instance, ttl)
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"AsyncEtcdRegistrar({self.core.name!r}, ttl={self.core.ttl})"

    async def _step(self) -> float:
        call = self.core.next_call()
        try:
            answer = await self.registry.http.acall(*call)
        except LBError as exc:
            return self.core.failed(exc)
        return self.core.answered(call, answer)

    async def start(self) -> AsyncEtcdRegistrar:
        if self._task is not None:
            return self
        while not self.core.registered:
            call = self.core.next_call()
            self.core.answered(call, await self.registry.http.acall(*call))
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"lbclient-etcd-registrar-{self.core.name}"
        )
        return self

    async def _run(self) -> None:
        wait = self.core.interval
        while True:
            await asyncio.sleep(wait)
            wait = await self._step()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        call = self.core.revoke_call()
        if call is not None:
            try:
                await self.registry.http.acall(*call)
            except LBError as exc:
                log.warning("etcd registrar %s: could not revoke: %s", self.core.name, exc)
            self.core.lease = None
            self.core.registered = False
        if self._owns_registry:
            self.registry.close()

    async def __aenter__(self) -> AsyncEtcdRegistrar:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
