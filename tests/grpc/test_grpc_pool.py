"""SubChannelPool: calls lease sub-channels without its lock, and none is ever closed in use.

The pool does no I/O (the channels create and discard sub-channels), so these tests give it
plain objects as sub-channels and a real balancer whose instance list changes under them.
"""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import ServiceInstance
from lbclient._balancer import ServiceState
from lbclient.grpc._pool import Lease, PoolClosed, SubChannelPool


class SubChannel:
    """A stand-in sub-channel that knows whether a call is using it when it is discarded."""

    def __init__(self, instance: ServiceInstance) -> None:
        self.address = instance.address
        self.users = 0
        self.discarded = False
        self.discarded_in_use = False


class Pool:
    """A pool over the service ``svc`` of a real balancer, with its sub-channels recorded."""

    def __init__(self, instances: list[ServiceInstance]) -> None:
        self.lb = lbclient.LoadBalancer({"svc": [i.address for i in instances]}, outlier=None)
        self.state: ServiceState = self.lb.service("svc")
        self.state.publish(instances)
        self.made: list[SubChannel] = []
        self.lock = threading.Lock()
        self.pool: SubChannelPool[SubChannel] = SubChannelPool(self._create, self._discard)

    def _create(self, instance: ServiceInstance) -> SubChannel:
        channel = SubChannel(instance)
        with self.lock:
            self.made.append(channel)
        return channel

    @staticmethod
    def _discard(channel: SubChannel) -> None:
        channel.discarded_in_use = channel.users > 0
        channel.discarded = True

    def begin(self) -> Lease[SubChannel]:
        """What a call does before it is sent: pick, lease, and use the sub-channel."""
        handle = self.state.pick()
        lease = self.pool.acquire(self.state, handle.endpoint)
        handle.done()
        with self.lock:
            assert not lease.channel.discarded, "a call got a closed sub-channel"
            lease.channel.users += 1
        return lease

    def end(self, lease: Lease[SubChannel]) -> None:
        with self.lock:
            lease.channel.users -= 1
        self.pool.release(lease)

    def settle(self) -> None:
        """One more call: the pool closes what its released calls left drained."""
        self.end(self.begin())

    def check(self) -> None:
        """No sub-channel was discarded in use; every retired idle one was discarded."""
        assert not any(c.discarded_in_use for c in self.made)
        live = {lease.channel for lease in self.pool._leases.values()}
        assert all(c.discarded or c in live for c in self.made)
        assert not any(c.discarded for c in live)

    def close(self) -> None:
        self.lb.close()


def instances(ports: list[int], shift: int = 0) -> list[ServiceInstance]:
    """Instances ``i0``, ``i1``, ... (``shift`` moves an id to another port: same id, new
    address, so its sub-channel is retired too)."""
    return [
        ServiceInstance("svc", "127.0.0.1", port + shift, id=f"i{port}") for port in sorted(ports)
    ]


def test_calls_racing_with_list_changes_never_get_or_lose_a_closed_subchannel() -> None:
    pool = Pool(instances([1, 2, 3]))
    stop = threading.Event()
    errors: list[BaseException] = []

    def calls(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                held = [pool.begin() for _ in range(rng.randint(1, 3))]
                rng.shuffle(held)
                for lease in held:
                    pool.end(lease)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            raise

    threads = [threading.Thread(target=calls, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    rng = random.Random(7)
    try:
        for _ in range(600):
            ports = rng.sample([1, 2, 3, 4, 5], rng.randint(1, 4))
            pool.state.publish(instances(ports, shift=rng.choice((0, 0, 100))))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    pool.settle()
    pool.check()
    assert len(pool.made) > 5  # the list really changed under the calls
    pool.close()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("begin"), st.integers(0, 2)),
            st.tuples(st.just("end"), st.integers(0, 10)),
            st.tuples(st.just("publish"), st.sets(st.integers(1, 4), min_size=1)),
        ),
        max_size=40,
    )
)
def test_any_sequence_of_calls_and_list_changes_closes_exactly_the_idle_retired(
    steps: list[tuple[str, object]],
) -> None:
    pool = Pool(instances([1, 2]))
    held: list[Lease[SubChannel]] = []
    try:
        for step, arg in steps:
            if step == "begin":
                held.append(pool.begin())
            elif step == "end" and held:
                assert isinstance(arg, int)
                pool.end(held.pop(arg % len(held)))
            elif step == "publish":
                assert isinstance(arg, set)
                pool.state.publish(instances(sorted(arg)))
            assert not any(lease.channel.discarded for lease in held)
        for lease in held:
            pool.end(lease)
        pool.settle()
        pool.check()
    finally:
        pool.close()


def test_a_closed_pool_hands_out_nothing_and_returns_every_subchannel() -> None:
    pool = Pool(instances([1, 2]))
    lease = pool.begin()
    closed = pool.pool.close()
    assert lease.channel in closed
    with pytest.raises(PoolClosed):
        pool.begin()
    pool.end(lease)  # a call that ends after close() is fine
    pool.close()


class Racing:
    """The service's state as a call's ``acquire`` reads it, with a list change (and the
    sweep another call makes) landing between its look-up of a lease and its count: the
    window the lock-free path must survive. ``acquire`` reads only these two attributes."""

    def __init__(self, pool: Pool, change: list[ServiceInstance]) -> None:
        self._pool = pool
        self._change: list[ServiceInstance] | None = change

    @property
    def endpoints(self) -> object:
        return self._pool.state.endpoints

    @property
    def scheduler(self) -> object:
        if self._change is not None:
            change, self._change = self._change, None
            self._pool.state.publish(change)
            self._pool.settle()  # another call sweeps: the idle lease is retired and closed
        return self._pool.state.scheduler


def test_a_call_racing_with_the_retirement_of_its_subchannel_takes_another() -> None:
    pool = Pool(instances([1, 2]))
    try:
        pool.settle()
        pool.settle()  # both instances have a sub-channel, idle
        endpoint = pool.state.endpoints["i1"]
        old = pool.pool._leases["i1"].channel
        left = instances([2])  # i1 leaves: the next call's sweep retires its sub-channel
        lease = pool.pool.acquire(Racing(pool, left), endpoint)  # type: ignore[arg-type]
        assert old.discarded  # retired and closed while this call was counting itself
        assert lease.channel is not old
        assert not lease.channel.discarded
        pool.pool.release(lease)
        pool.check()
    finally:
        pool.close()
