"""SubChannelPool: one grpcio channel per instance, created on first use and shared by calls.

A sub-channel lives as long as its instance is in the registry's list. The pool notices a
change of the list without any hook into the balancer: the service's scheduler is an
immutable object replaced whenever the list changes (grpc-go's picker), so comparing its
identity on each lease is enough, and the sweep runs only after a change. A sub-channel
whose instance left is retired: closed at once when idle, otherwise after its last call ends,
so a deploy never cuts a streaming call short. An instance that is merely ejected or
unhealthy keeps its sub-channel (and its connection) for when it comes back.

A drained sub-channel is closed by the next ``acquire`` (or by ``close``), never by
``release``: release runs in grpcio's completion callbacks, and closing a sync channel
from its own callback thread deadlocks the calls still waiting on that thread.

The pool does no I/O itself: ``create`` and ``discard`` are the sync or aio edge's.

A call leases and releases without the pool's lock (``acquire``'s fast path, ``release``):
each lease counts its starts and ends with two ``itertools.count``, whose ``next`` is atomic
in CPython, and the lock is taken only when the list changed or the lease is retired. A start
that finds its lease retired after counting itself undoes it (an end) and takes the locked
path; the locked idle check reads the ends before the starts, so a start racing with it can
only make a lease look busy (it then waits for the next end), never idle while in use.

Health probes lease the sub-channels calls opened (``borrow``, through the sync channel's
``lend``), so a probed instance has one connection, not two; a probe counts as a call, so a
retired sub-channel outlives the probe that uses it, while ``close`` cuts it like any call.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from lbclient._balancer import ServiceState
from lbclient._endpoint import Endpoint
from lbclient._instance import ServiceInstance

C = TypeVar("C")


class Lease(Generic[C]):
    """A sub-channel and the calls running on it. ``callables`` caches multicallables."""

    __slots__ = ("_ends", "_starts", "address", "callables", "channel", "instance", "retired")

    def __init__(self, channel: C, instance: ServiceInstance) -> None:
        self.channel = channel
        self.instance = instance
        self.address = instance.address
        self._starts = itertools.count()
        self._ends = itertools.count()
        self.retired = False
        self.callables: dict[object, Any] = {}

    def start(self) -> None:
        """Count a call (or probe) starting on this sub-channel (atomic, lock-free)."""
        next(self._starts)

    @property
    def active(self) -> int:
        """Calls running now. Reading takes one start and one end (balanced), ends first:
        a start racing with the read makes the count too high, never too low."""
        ends = next(self._ends)
        return next(self._starts) - ends


class PoolClosed(Exception):
    """The load-balanced channel was closed; no new call may start."""


class SubChannelPool(Generic[C]):
    """The sub-channels of one load-balanced channel, keyed by instance id."""

    def __init__(
        self, create: Callable[[ServiceInstance], C], discard: Callable[[C], None]
    ) -> None:
        self._create = create
        self._discard = discard
        self._leases: dict[str, Lease[C]] = {}
        self._draining: set[Lease[C]] = set()
        self._drained: list[C] = []
        self._seen: object = None
        self._lock = threading.Lock()
        self.closed = False

    def __len__(self) -> int:
        return len(self._leases)

    def addresses(self) -> list[str]:
        """Addresses with a live sub-channel (for tests and stats)."""
        return sorted(lease.address for lease in self._leases.values())

    def acquire(self, state: ServiceState, endpoint: Endpoint) -> Lease[C]:
        """The sub-channel for ``endpoint``, counted busy until ``release``."""
        lease = self._leases.get(endpoint.id)
        if (
            lease is not None
            and lease.instance is endpoint.instance
            and state.scheduler is self._seen
            and not self._drained
            and not self.closed
        ):
            next(lease._starts)  # lease.start(), inline: this runs for every call
            if not lease.retired:
                return lease
            self.release(lease)  # retired meanwhile: undo, and take the locked path
        return self._acquire(state, endpoint)

    def _acquire(self, state: ServiceState, endpoint: Endpoint) -> Lease[C]:
        """``acquire`` under the lock: sweeps after a list change, makes sub-channels."""
        idle: list[C] = []
        with self._lock:
            if self.closed:
                raise PoolClosed()
            if self._drained:
                idle += self._drained
                self._drained.clear()
            if state.scheduler is not self._seen:
                self._seen = state.scheduler
                current = state.endpoints
                for instance_id in [i for i in self._leases if i not in current]:
                    self._retire(self._leases.pop(instance_id), idle)
            lease = self._leases.get(endpoint.id)
            instance = endpoint.instance
            if lease is None or (
                lease.instance is not instance and not self._same_address(lease, instance)
            ):
                if lease is not None:  # same id, new address: the old channel goes
                    self._retire(lease, idle)
                lease = Lease(self._create(instance), instance)
                self._leases[endpoint.id] = lease
            lease.start()
        for channel in idle:
            self._discard(channel)
        return lease

    def borrow(self, instance: ServiceInstance) -> Lease[C] | None:
        """The live sub-channel of ``instance`` for a health probe, busy until ``release``.

        Never made for the probe: an instance no call has reached yet is probed on the
        prober's own (bounded) channels, so a large service's pool holds only the
        connections its calls use. None as well when the pool is closed or the sub-channel
        is retired or points elsewhere (the instance left or moved).
        """
        with self._lock:
            lease = self._leases.get(instance.id)
            if self.closed or lease is None or lease.address != instance.address:
                return None
            lease.start()
            return lease

    def release(self, lease: Lease[C]) -> None:
        """A call on ``lease`` ended; a retired sub-channel's last call makes it closable."""
        next(lease._ends)
        if lease.retired:  # set under the lock before its idle check: see the module's doc
            with self._lock:
                if lease in self._draining and lease.active <= 0:
                    self._draining.discard(lease)
                    self._drained.append(lease.channel)

    @staticmethod
    def _same_address(lease: Lease[C], instance: ServiceInstance) -> bool:
        # A new description of the same instance (weight, tags): keep the connection.
        if lease.address != instance.address:
            return False
        lease.instance = instance
        return True

    def _retire(self, lease: Lease[C], idle: list[C]) -> None:
        lease.retired = True  # before reading ``active``: a start from now on undoes itself
        if lease.active > 0:
            self._draining.add(lease)
        else:
            idle.append(lease.channel)

    def close(self) -> list[C]:
        """Stop leasing; return every sub-channel for the caller to close (busy ones too)."""
        with self._lock:
            self.closed = True
            channels = [lease.channel for lease in self._leases.values()]
            channels += [lease.channel for lease in self._draining]
            channels += self._drained
            self._leases.clear()
            self._draining.clear()
            self._drained.clear()
        return channels
