"""Priority levels with Envoy's overprovisioning factor, and panic per priority.

Instances carry a priority (``ServiceInstance.priority``, 0 the highest). All traffic goes to
priority 0 while enough of it is healthy; as it loses instances, traffic spills to the next
levels in proportion to their health (Envoy's "priority levels"):

- health(P) = min(100, factor x healthy% of P), factor 1.4 by default (Envoy's 140);
- normalized total health NTH = min(100, sum of health(P));
- load(P) = min(100 - load of the levels above, health(P) x 100 / NTH).

So P0 keeps 100% down to about 71% healthy, and gets 70% at 50% healthy (the other 30% go to
P1). While NTH < 100, a level with fewer than ``panic_threshold`` of its instances healthy
is in panic: it uses all its instances (``fail_open``) or none (``fail_open=False``). When no
level has any health, P0 takes everything, in panic. A very large factor gives hard failover
(Spring, gRPC's xDS priorities): the first level with a healthy instance takes all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from lbclient._endpoint import Endpoint

DEFAULT_OVERPROVISIONING = 1.4
"""Envoy's ``overprovisioning_factor`` (140, in percent)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PriorityPlan:
    """The usable endpoints across levels (those of idle levels last: only retries go
    there), each level's share of traffic (percent), and the levels in panic."""

    endpoints: tuple[Endpoint, ...]
    loads: Mapping[int, int]
    panic: frozenset[int]


def priority_loads(health: Mapping[int, tuple[int, int]], factor: float) -> dict[int, int]:
    """Percent of traffic per priority from ``{priority: (healthy, total)}`` (Envoy's math).

    >>> priority_loads({0: (1, 2), 1: (2, 2)}, 1.4)
    {0: 70, 1: 30}
    >>> priority_loads({0: (1, 7), 1: (3, 14)}, 1.4)
    {0: 40, 1: 60}
    """
    levels = sorted(health)
    scores = {p: _score(health[p], factor) for p in levels}
    total = min(100, sum(scores.values()))
    if total == 0:
        return {p: (100 if i == 0 else 0) for i, p in enumerate(levels)}
    loads: dict[int, int] = {}
    left = 100
    for p in levels:
        loads[p] = min(left, scores[p] * 100 // total)
        left -= loads[p]
    if left:  # integer rounding: the first level with health takes the rest, as Envoy
        first = next(p for p in levels if scores[p])
        loads[first] += left
    return loads


def plan_priorities(
    everyone: Sequence[Endpoint],
    healthy: Sequence[Endpoint],
    *,
    factor: float,
    threshold: float,
    fail_open: bool,
) -> PriorityPlan:
    """Split ``everyone`` (what entered the health links) and ``healthy`` (what left them) by
    priority, and decide each level's load and panic."""
    by_level: dict[int, list[Endpoint]] = {}
    for endpoint in everyone:
        by_level.setdefault(endpoint.instance.priority, []).append(endpoint)
    well: dict[int, list[Endpoint]] = {}
    for endpoint in healthy:
        well.setdefault(endpoint.instance.priority, []).append(endpoint)
    counts = {p: (len(well.get(p, ())), len(members)) for p, members in by_level.items()}
    loads = priority_loads(counts, factor)
    scores = sum(_score(c, factor) for c in counts.values())
    panic = frozenset(
        p for p, (h, t) in counts.items() if threshold > 0 and scores < 100 and h < threshold * t
    )
    chosen: list[Endpoint] = []
    kept: dict[int, int] = {}
    idle: list[Endpoint] = []  # healthy, in levels without load: where retries may spill
    for p in sorted(loads):
        if p in panic:
            if not fail_open:
                continue
            members = by_level[p]
        else:
            members = well.get(p, [])
        if not loads[p]:
            idle.extend(well.get(p, []))
        elif members:
            chosen.extend(members)
            kept[p] = loads[p]
    return PriorityPlan(tuple(chosen + idle) if chosen else (), kept, panic)


def _score(counts: tuple[int, int], factor: float) -> int:
    """health(P) in percent, in integers as Envoy (1.4 x 100 is not exactly 140 in floats)."""
    healthy, total = counts
    if not total:
        return 0
    return min(100, round(factor * 100) * healthy // total)
