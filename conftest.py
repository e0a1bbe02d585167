"""Fixtures shared by the core tests and the plugins' tests (this directory is the rootdir)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from lbclient import ServiceInstance
from lbclient._balancer import ServiceState
from lbclient._context import EMPTY_CONTEXT
from lbclient._endpoint import Endpoint
from lbclient.schedulers import Scheduler, scheduler_class

Marked = Callable[[ServiceInstance], bool]
Fragile = Callable[..., type[Scheduler]]


def explodes(instance: ServiceInstance) -> bool:
    """The default mark: ``"explode"`` among the instance's tags or metadata values."""
    return "explode" in instance.tags or "explode" in instance.metadata.values()


def _fragile(base: str = "round_robin", marked: Marked = explodes) -> type[Scheduler]:
    parent: Any = scheduler_class(base)

    class FragileScheduler(parent):  # type: ignore[misc]
        name = f"fragile-{parent.name}"

        def __init__(self, endpoints: Sequence[Endpoint], **options: Any) -> None:
            for endpoint in endpoints:
                if marked(endpoint.instance):
                    raise OverflowError(f"intermediate overflow in fsum ({endpoint.id})")
            super().__init__(endpoints, **options)

    return FragileScheduler


@pytest.fixture(scope="session")
def fragile_scheduler() -> Fragile:
    """``fragile_scheduler(base="round_robin", marked=explodes)``: the built-in scheduler
    ``base``, except that it cannot be built over a marked instance, raising OverflowError as
    wrr, dh or ring_hash once did over a Consul ``Weights.Passing`` of 1e308. A user's
    scheduler, so registry answers can be made unusable whatever entries the parsers accept."""
    return _fragile


def _whole(state: ServiceState, picks: int = 5) -> dict[str, ServiceInstance]:
    """Assert that the state in force is whole and return its membership (id -> instance).

    Read under the state's lock, as a writer swaps: the scheduler is built over exactly the
    usable list, drawn from the membership, and picks land on members only.
    """
    with state._lock:
        members = dict(state.endpoints)
        usable = state.usable
        scheduler = state.scheduler
    assert {e.id for e in usable} <= set(members)
    assert all(members[e.id] is e for e in usable)
    if usable:
        assert scheduler is not None
        assert scheduler.endpoints == usable
        for _ in range(picks):
            endpoint = scheduler.pick(EMPTY_CONTEXT)
            assert members.get(endpoint.id) is endpoint
    else:
        assert scheduler is None
    return {key: endpoint.instance for key, endpoint in members.items()}


@pytest.fixture(scope="session")
def whole() -> Callable[..., dict[str, ServiceInstance]]:
    """``whole(state)``: assert endpoints and scheduler agree; return the membership."""
    return _whole
