"""An ejection seen on the request path rebuilds the scheduler off that path.

The request whose outcome ejects an instance returns without building a scheduler: the build
runs on the shared timer thread, the old scheduler serving meanwhile, and no pick in between
goes to the ejected instance.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import lbclient
from lbclient import Endpoint, Failure, PickContext
from lbclient.filters import OutlierDetection
from lbclient.schedulers.round_robin import RoundRobinScheduler

from .conftest import usable_ids, wait_until

builds: list[str] = []


class RecordingScheduler(RoundRobinScheduler):
    """Round robin that notes which thread built it."""

    def __init__(self, endpoints: Sequence[Endpoint], **kwargs: Any) -> None:
        builds.append(threading.current_thread().name)
        super().__init__(endpoints, **kwargs)


def test_an_ejection_from_a_request_rebuilds_on_the_timer_thread() -> None:
    builds.clear()
    addresses = [f"127.0.0.1:{port}" for port in (1, 2, 3, 4)]
    lb = lbclient.LoadBalancer(
        {"svc": addresses},
        scheduler=RecordingScheduler,
        outlier=OutlierDetection(consecutive_5xx=2, max_ejection_percent=50),
    )
    builds.clear()  # the settings check builds one over a placeholder when it is given
    with lb:
        state = lb.service("svc")
        assert builds == [threading.current_thread().name]
        target = addresses[0]
        others = frozenset(addresses[1:])
        # Holding the service lock keeps the timer thread's build waiting, so the picks below
        # are served by the old scheduler (RLock: this thread's own ejection still goes in).
        with state._lock:
            for _ in range(2):
                with state.pick(PickContext(exclude=others)) as handle:
                    assert handle.instance.id == target
                    handle.done(Failure.SERVER, status=503)
            # The ejecting request did not build; the list already says the instance is out.
            assert builds.count(threading.current_thread().name) == 1
            assert target not in usable_ids(lb, "svc")
            assert state.scheduler is not None
            assert len(state.scheduler.endpoints) == 4  # the old one, still serving
            for _ in range(200):
                with state.pick() as handle:
                    assert handle.instance.id != target
        wait_until(lambda: state.scheduler is not None and len(state.scheduler.endpoints) == 3)
        assert builds[1:] == ["lbclient-timer"]
        assert all(row["in_flight"] == 0 for row in lb.stats("svc")["instances"])


def test_a_publication_during_a_deferred_build_wins() -> None:
    lb = lbclient.LoadBalancer(
        {"svc": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]},
        outlier=OutlierDetection(consecutive_5xx=1, max_ejection_percent=50),
    )
    with lb:
        state = lb.service("svc")
        others = frozenset({"127.0.0.1:2", "127.0.0.1:3"})
        with state.pick(PickContext(exclude=others)) as handle:
            handle.done(Failure.SERVER, status=500)
        state.publish([i.instance for i in state.endpoints.values() if i.id != "127.0.0.1:3"])
        wait_until(lambda: state.scheduler is not None and len(state.scheduler.endpoints) == 1)
        assert [e.id for e in state.usable] == ["127.0.0.1:2"]
        for _ in range(20):
            with state.pick() as handle:
                assert handle.instance.id == "127.0.0.1:2"
