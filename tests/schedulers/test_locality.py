"""lblc and lblcr: keys stay on their servers across rebuilds, move or spread under overload."""

from __future__ import annotations

from lbclient import Endpoint, Outcome, PickContext
from lbclient.schedulers.lblc import LocalityLeastConnectionScheduler
from lbclient.schedulers.lblcr import ReplicatedLocalityScheduler

from ._support import build, endpoints, key_contexts, load

KEYS = key_contexts(200, "tenant")


def drain(endpoint: Endpoint, count: int) -> None:
    for _ in range(count):
        endpoint.finish(Outcome(latency=0.01))


def test_lblc_keeps_each_key_on_its_server_across_rebuilds() -> None:
    items = endpoints([1.0] * 6)
    first = build("lblc", items)
    placed = {c.key: first.pick(c) for c in KEYS}
    assert len({e.id for e in placed.values()}) == 6  # new keys spread by least connection
    newcomer, *_ = endpoints([1.0], port=21000)
    gone = items[2]
    survivors = [e for e in items if e is not gone]
    second = build("lblc", [*survivors, newcomer], previous=first)
    for context in KEYS:
        now = second.pick(context)
        if placed[context.key] is gone:
            assert now is not gone
            placed[context.key] = now
        else:
            assert now is placed[context.key]  # not remapped as a hash would
    third = build("lblc", [*survivors, newcomer], previous=second)
    assert all(third.pick(c) is placed[c.key] for c in KEYS)


def test_lblc_moves_a_key_off_an_overloaded_server_and_keeps_it_there() -> None:
    items = endpoints([1.0] * 3)
    scheduler = build("lblc", items, overload_floor=2)
    context = PickContext(key="hot")
    home = scheduler.pick(context)
    load(home, 1)  # below the floor: not overloaded
    assert scheduler.pick(context) is home
    load(home, 1)  # 2 in flight, the others idle: more than twice the least loaded
    moved = scheduler.pick(context)
    assert moved is not home
    drain(home, 2)
    assert scheduler.pick(context) is moved


def test_lblc_is_not_overloaded_when_everyone_is_as_busy() -> None:
    items = endpoints([1.0] * 3)
    scheduler = build("lblc", items)
    context = PickContext(key="warm")
    home = scheduler.pick(context)
    for endpoint in items:
        load(endpoint, 5)
    assert scheduler.pick(context) is home


def test_lblc_table_is_bounded_and_not_inherited_across_kinds() -> None:
    items = endpoints([1.0] * 3)
    scheduler = build("lblc", items, max_keys=10)
    assert isinstance(scheduler, LocalityLeastConnectionScheduler)
    for context in KEYS:
        scheduler.pick(context)
    assert len(scheduler.table) == 10
    scheduler.pick(PickContext())  # no key: random, nothing remembered
    assert len(scheduler.table) == 10
    other = build("lblcr", items, previous=scheduler)
    assert isinstance(other, ReplicatedLocalityScheduler)
    assert other.table == {}


def test_lblcr_grows_the_set_under_overload_and_prunes_it_when_stale() -> None:
    items = endpoints([1.0] * 4)
    scheduler = build("lblcr", items, prune_after=3600.0)
    assert isinstance(scheduler, ReplicatedLocalityScheduler)
    context = PickContext(key="video-42")
    home = scheduler.pick(context)
    assert scheduler.members("video-42") == [home.id]
    load(home, 3)
    helper = scheduler.pick(context)
    assert helper is not home
    assert scheduler.members("video-42") == [home.id, helper.id]
    load(helper, 1)
    assert scheduler.pick(context) is helper  # least loaded member, no growth needed
    # The set survives a rebuild; with prune_after=0 the most loaded member leaves.
    pruning = build("lblcr", items, previous=scheduler, prune_after=0.0)
    assert isinstance(pruning, ReplicatedLocalityScheduler)
    assert pruning.pick(context) is helper
    assert pruning.members("video-42") == [helper.id]


def test_lblcr_drops_members_that_left_the_list() -> None:
    items = endpoints([1.0] * 3)
    scheduler = build("lblcr", items)
    context = PickContext(key=b"k")
    home = scheduler.pick(context)
    rebuilt = build("lblcr", [e for e in items if e is not home], previous=scheduler)
    assert isinstance(rebuilt, ReplicatedLocalityScheduler)
    replacement = rebuilt.pick(context)
    assert replacement is not home
    assert rebuilt.members(b"k") == [replacement.id]
