"""A publication reconciles the membership: endpoints kept by id, changes applied, and the
scheduler rebuilt from the previous one gives exactly what a fresh build gives."""

from __future__ import annotations

import dataclasses
import random

import pytest

from lbclient import LoadBalancer, PickContext, ServiceInstance
from lbclient.schedulers import scheduler_class


def fleet(first: int, count: int) -> list[ServiceInstance]:
    return [
        ServiceInstance("svc", f"10.0.{n >> 8 & 255}.{n & 255}", 8000, weight=1.0 + n % 3)
        for n in range(first, first + count)
    ]


def test_endpoints_are_kept_by_id_and_changes_applied() -> None:
    start = fleet(0, 5)
    lb = LoadBalancer({"svc": start}, scheduler="round_robin", outlier=None)
    try:
        state = lb.service("svc")
        before = dict(state.endpoints)
        scheduler = state.scheduler
        state.publish(list(state.usable[i].instance for i in range(5)))  # the same objects
        assert state.scheduler is scheduler  # nothing changed: nothing rebuilt
        heavier = dataclasses.replace(before[start[1].id].instance, weight=9.0)
        equal = dataclasses.replace(before[start[2].id].instance)  # a new, equal object
        kept = [before[i.id].instance for i in (start[0], start[3])]
        newcomer = fleet(50, 1)[0]
        state.publish([kept[0], heavier, equal, kept[1], newcomer])
        assert list(state.endpoints) == [
            start[0].id,
            start[1].id,
            start[2].id,
            start[3].id,
            newcomer.id,
        ]
        for instance_id in (start[0].id, start[1].id, start[2].id, start[3].id):
            assert state.endpoints[instance_id] is before[instance_id]  # history kept
        assert state.endpoints[start[1].id].instance is heavier
        assert state.endpoints[start[1].id].weight == 9.0
        assert state.endpoints[start[2].id].instance == equal
        assert start[4].id not in state.endpoints
        assert {e.id for e in state.usable} == set(state.endpoints)
    finally:
        lb.close()


@pytest.mark.parametrize(
    ("name", "options", "structure"),
    [
        ("maglev", {"table_size": 4099}, "table"),
        ("ring_hash", {}, "_owners"),
    ],
)
def test_churned_hash_schedulers_match_a_fresh_build(
    name: str, options: dict[str, int], structure: str
) -> None:
    rng = random.Random(7)
    instances = fleet(0, 300)
    lb = LoadBalancer({"svc": instances}, scheduler=name, scheduler_options=options, outlier=None)
    try:
        state = lb.service("svc")
        fresh_id = 1000
        for _ in range(6):
            rng.shuffle(instances)
            leaving = rng.randrange(1, 6)
            instances = instances[leaving:] + fleet(fresh_id, rng.randrange(0, 6))
            fresh_id += 10
            reweighed = rng.randrange(len(instances))
            instances[reweighed] = dataclasses.replace(instances[reweighed], weight=2.5)
            state.publish(instances)
            assert state.registry_error is None
            fresh = scheduler_class(name)(state.usable, **options)
            built = state.scheduler
            assert built is not None
            assert [e.id for e in getattr(built, structure)] == [
                e.id for e in getattr(fresh, structure)
            ]
            for n in range(50):
                context = PickContext(key=f"user-{n}")
                assert built.pick(context).id == fresh.pick(context).id
    finally:
        lb.close()
