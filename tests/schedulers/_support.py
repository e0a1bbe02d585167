"""Helpers for the scheduler tests: endpoints over loopback-style instances, loads, keys."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from lbclient import Endpoint, Outcome, PickContext, ServiceInstance
from lbclient.schedulers import Scheduler, scheduler_class

SMALL_TABLES: dict[str, dict[str, Any]] = {
    # Keep tests fast: Maglev's default 65,537-slot table is exercised in test_consistent_hash.
    "maglev": {"table_size": 4099},
    "mh": {"table_size": 4099},
}


def endpoints(weights: Iterable[float], *, port: int = 20000) -> list[Endpoint]:
    """One endpoint per weight, ids ``127.0.0.<n>:<port+n>`` (``127.0.1.<n - 256>`` after
    255) so that the first ones sort by position."""
    return [
        Endpoint(
            ServiceInstance("svc", f"127.0.{(n + 1) // 256}.{(n + 1) % 256}", port + n, weight=w)
        )
        for n, w in enumerate(weights)
    ]


def build(name: str, items: Sequence[Endpoint], seed: int = 0, **options: Any) -> Scheduler:
    cls = scheduler_class(name)
    return cls(items, rng=random.Random(seed), **{**SMALL_TABLES.get(name, {}), **options})


def load(endpoint: Endpoint, count: int) -> None:
    """Put ``count`` requests in flight on ``endpoint`` (as the balancer does on a pick)."""
    for _ in range(count):
        endpoint.begin()


def answer(endpoint: Endpoint, latency: float, times: int = 1) -> None:
    """Feed ``times`` completed requests of ``latency`` seconds into ``endpoint``."""
    for _ in range(times):
        endpoint.begin()
        endpoint.finish(Outcome(latency=latency))


def key_contexts(count: int, prefix: str = "key") -> list[PickContext]:
    return [PickContext(key=f"{prefix}-{i}", source=f"{prefix}-{i}") for i in range(count)]


def counts(scheduler: Scheduler, contexts: Iterable[PickContext]) -> Counter[str]:
    return Counter(scheduler.pick(context).id for context in contexts)


def assert_shares(
    observed: Counter[str],
    items: Sequence[Endpoint],
    total: int,
    *,
    sigmas: float = 5.0,
    slack: float = 0.0,
) -> None:
    """Each endpoint got its weight share of ``total`` picks, within ``sigmas`` binomial sd
    plus ``slack`` (a relative error the structure itself allows, e.g. ring placement)."""
    weight_sum = sum(e.weight for e in items)
    for e in items:
        p = e.weight / weight_sum
        sd = (total * p * (1 - p)) ** 0.5
        assert abs(observed[e.id] - total * p) <= sigmas * sd + slack * total * p + 2, (
            e.id,
            observed,
            p,
        )
