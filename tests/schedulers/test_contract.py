"""Every registered scheduler honours the contract: picks from its list, avoids exclusions,
never raises for a non-empty list (keys or not), survives concurrent use, validates options."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from lbclient import ConfigurationError, LoadBalancer, Outcome, PickContext
from lbclient._instance import MAX_WEIGHT, MIN_WEIGHT
from lbclient.schedulers import available_schedulers, scheduler_class
from lbclient.schedulers.ring_hash import RingHashScheduler
from lbclient.schedulers.weighted_round_robin import WeightedRoundRobinScheduler

from ._support import build, endpoints, key_contexts

NAMES = available_schedulers()
WEIGHT_SETS = [[1.0], [1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 0.5], [float(1 + i % 7) for i in range(50)]]
CONTEXTS = [PickContext(), *key_contexts(40), PickContext(key=b"bytes-key", source="caller")]


def test_the_whole_family_is_registered() -> None:
    expected = {
        "round_robin", "rr", "random", "weighted_round_robin", "wrr", "weighted_random",
        "least_request", "peak_ewma", "ring_hash", "maglev", "mh", "rendezvous",
        "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "sh", "fo", "ovf", "twos",
    }  # fmt: skip
    assert expected <= set(NAMES)
    assert scheduler_class("rr") is scheduler_class("round_robin")
    assert scheduler_class("wrr") is scheduler_class("weighted_round_robin")
    assert scheduler_class("mh") is scheduler_class("maglev")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("weights", WEIGHT_SETS, ids=lambda w: f"{len(w)}")
def test_picks_only_from_its_list(name: str, weights: list[float]) -> None:
    items = endpoints(weights)
    scheduler = build(name, items)
    for context in CONTEXTS:
        for _ in range(3):
            assert scheduler.pick(context) in items


@pytest.mark.parametrize("name", NAMES)
def test_avoids_excluded_instances_while_others_are_left(name: str) -> None:
    items = endpoints([1.0, 2.0, 1.0, 3.0, 1.0, 1.0])
    scheduler = build(name, items)
    rng = random.Random(7)
    for context in CONTEXTS:
        excluded = frozenset(e.id for e in rng.sample(items, rng.randrange(1, len(items))))
        retry = PickContext(key=context.key, source=context.source, exclude=excluded)
        assert scheduler.pick(retry).id not in excluded
        # Everything excluded: reuse something rather than fail the request.
        everything = PickContext(key=context.key, exclude=frozenset(e.id for e in items))
        assert scheduler.pick(everything) in items


@pytest.mark.parametrize("name", NAMES)
def test_keyed_schedulers_fall_back_to_random_without_a_key(name: str) -> None:
    cls = scheduler_class(name)
    fallback = getattr(cls, "no_key_fallback", None)
    if not cls.uses_key and fallback is None:
        assert cls.uses_key is False
        return
    assert fallback == "random"
    items = endpoints([1.0] * 5)
    scheduler = build(name, items)
    seen = {scheduler.pick(PickContext()).id for _ in range(200)}
    assert len(seen) > 1


@pytest.mark.parametrize("name", NAMES)
def test_concurrent_picks_from_many_threads(name: str) -> None:
    items = endpoints([1.0, 2.0, 3.0, 1.0, 1.0, 4.0, 1.0, 2.0])
    scheduler = build(name, items)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait()
            for i in range(300):
                context = PickContext(key=f"k{rng.randrange(50)}") if i % 2 else PickContext()
                chosen = scheduler.pick(context)
                assert chosen in items
                chosen.begin()
                if i % 3 == 0:  # hold some requests across picks so load varies
                    scheduler.pick(context.excluding(chosen.id))
                chosen.finish(Outcome(latency=0.001 * (1 + seed % 3)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(e.in_flight == 0 for e in items)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_a_configuration_error_naming_it(name: str) -> None:
    with pytest.raises(ConfigurationError, match="bogus"):
        scheduler_class(name)(endpoints([1.0]), bogus=1)


BAD_OPTIONS = [
    ("weighted_round_robin", "resolution", 0),
    ("least_request", "choice_count", 1),
    ("least_request", "choice_count", True),
    ("least_request", "bias", -0.5),
    ("least_request", "bias", float("nan")),
    ("ring_hash", "min_ring_size", 0),
    ("ring_hash", "max_ring_size", 10),
    ("maglev", "table_size", 65536),
    ("mh", "table_size", "big"),
    ("dh", "table_size", 0),
    ("sh", "table_size", -3),
    ("ovf", "capacity", 0),
    ("lblc", "overload_floor", 0),
    ("lblc", "max_keys", 0),
    ("lblcr", "prune_after", -1),
]


@pytest.mark.parametrize(("name", "option", "value"), BAD_OPTIONS)
def test_bad_option_values_name_the_option(name: str, option: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=option):
        scheduler_class(name)(endpoints([1.0, 2.0]), **{option: value})


GOOD_OPTIONS = [
    ("weighted_round_robin", {"resolution": 8}),
    ("least_request", {"choice_count": 3, "bias": 0.5}),
    ("ring_hash", {"min_ring_size": 64, "max_ring_size": 4096}),
    ("maglev", {"table_size": 251}),
    ("dh", {"table_size": 16}),
    ("ovf", {"capacity": 2.5}),
    ("lblc", {"overload_floor": 3, "max_keys": 10}),
    ("lblcr", {"prune_after": 1.0, "max_keys": 10}),
]


@pytest.mark.parametrize(("name", "options"), GOOD_OPTIONS)
def test_options_survive_the_retry_rebuild(name: str, options: dict[str, object]) -> None:
    items = endpoints([1.0, 2.0, 3.0])
    scheduler = build(name, items, **options)
    for context in key_contexts(20):
        first = scheduler.pick(context)
        assert scheduler.pick(context.excluding(first.id)).id != first.id


@pytest.mark.parametrize("name", NAMES)
def test_every_scheduler_works_inside_the_load_balancer(name: str) -> None:
    options = {"maglev": {"table_size": 251}, "mh": {"table_size": 251}}.get(name, {})
    lb = LoadBalancer(
        {"svc": ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]},
        scheduler=name,
        scheduler_options=options,
    )
    try:
        for context in key_contexts(10):
            with lb.pick("svc", context) as handle:
                assert handle.instance.port in (8001, 8002, 8003)
        state = lb.service("svc")
        state.publish([i for i in (e.instance for e in state.usable) if i.port != 8002])
        for context in key_contexts(10):
            with lb.pick("svc", context) as handle:
                assert handle.instance.port in (8001, 8003)
        assert all(row["in_flight"] == 0 for row in lb.stats("svc")["instances"])
    finally:
        lb.close()


@pytest.mark.parametrize("name", NAMES)
async def test_concurrent_picks_from_many_tasks(name: str) -> None:
    options = {"maglev": {"table_size": 251}, "mh": {"table_size": 251}}.get(name, {})
    lb = LoadBalancer(
        {"svc": [f"127.0.0.1:{port}" for port in range(8001, 8007)]},
        scheduler=name,
        scheduler_options=options,
    )

    async def worker(seed: int) -> None:
        for i in range(40):
            context = PickContext(key=f"k{(seed * 7 + i) % 30}", source=f"s{seed}")
            with await lb.apick("svc", context) as handle:
                await asyncio.sleep(0)  # hold the slot while other tasks pick
                assert handle.instance.port in range(8001, 8007)

    try:
        await asyncio.gather(*(worker(seed) for seed in range(30)))
        rows = lb.stats("svc")["instances"]
        assert all(row["in_flight"] == 0 for row in rows)
        assert sum(row["picks"] for row in rows) == 30 * 40
    finally:
        lb.close()


@pytest.mark.parametrize("name", ["ring_hash", "maglev", "rendezvous", "dh", "sh"])
def test_hash_retries_walk_to_the_same_next_instance_on_every_client(name: str) -> None:
    items = endpoints([1.0, 2.0, 1.0, 1.0, 3.0])
    one, other = build(name, items, 1), build(name, list(reversed(items)), 2)
    for context in key_contexts(100):
        first = one.pick(context)
        assert other.pick(context) is first
        retry = context.excluding(first.id)
        assert one.pick(retry) is other.pick(retry) is not first


def test_sh_hashes_the_source_not_the_key() -> None:
    items = endpoints([1.0] * 8)
    scheduler = build("sh", items)
    by_source = {scheduler.pick(PickContext(key=f"k{i}", source="caller-1")).id for i in range(50)}
    assert len(by_source) == 1
    by_key = {scheduler.pick(PickContext(key="same", source=f"c{i}")).id for i in range(50)}
    assert len(by_key) > 1


def test_extreme_weights_keep_rings_and_schedules_bounded() -> None:
    items = endpoints([MIN_WEIGHT, MAX_WEIGHT, 3.0])  # the widest ratio an instance allows
    ring = build("ring_hash", items)
    assert isinstance(ring, RingHashScheduler)
    assert ring.ring_size <= ring.max_ring_size + len(items)
    assert ring.max_ring_size == 65536
    big = build("ring_hash", items, min_ring_size=100_000)
    assert isinstance(big, RingHashScheduler)
    assert big.max_ring_size == 100_000
    wrr = build("wrr", items)
    assert isinstance(wrr, WeightedRoundRobinScheduler)
    assert len(wrr.schedule) <= 1024 + len(items)
    assert {e.id for e in wrr.schedule} == {e.id for e in items}  # everyone keeps a slot
    maglev = build("maglev", items, table_size=251)
    assert maglev.pick(PickContext(key="k")) in items


def test_maglev_with_more_instances_than_slots_still_picks() -> None:
    items = endpoints([1.0] * 300)
    scheduler = build("maglev", items, table_size=251)
    for context in key_contexts(50):
        assert scheduler.pick(context) in items
        assert scheduler.pick(context.excluding(scheduler.pick(context).id)) in items
