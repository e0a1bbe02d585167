"""Fixtures shared by the core tests and the plugins' tests (this directory is the rootdir)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from lbclient import ServiceInstance
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
