"""A watch never dies, and the balancer is never half-updated (issue 10, items 1 and 7).

Whatever goes wrong between a registry answer and the new scheduler, the last good state stays
in force as a whole (endpoints and scheduler agree), ``stats()`` names the error, the log gets
one line per change of state, and the next good answer applies. Answers are made unusable with
a user's scheduler that cannot be built over an instance marked "explode" (the
``fragile_scheduler`` fixture), so the tests hold whatever entries the parsers accept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import ServiceInstance
from lbclient._balancer import ServiceState
from lbclient._config import ServiceConfig
from lbclient.registry import StaticRegistry, TaskWatch, ThreadWatch, WatchPolicy
from lbclient.schedulers import available_schedulers

Fragile = Callable[..., Any]
Whole = Callable[[ServiceState], dict[str, ServiceInstance]]


def wait_for(condition: Callable[[], object], timeout: float = 15.0) -> None:
    """Poll ``condition`` until it holds; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def entry(port: int, *, explode: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    if explode:
        item["metadata"] = {"mark": "explode"}
    return item


def rewrite(path: Path, services: dict[str, Any], bump: float) -> None:
    """Replace the file the way deployment tools do: write aside, then rename over it."""
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(services))
    stamp = path.stat().st_mtime + bump  # coarse file-system clocks must still see a change
    os.utime(staged, (stamp, stamp))
    os.replace(staged, path)


def ports(lb: lbclient.LoadBalancer, service: str = "orders") -> set[int]:
    return {int(row["address"].rsplit(":", 1)[1]) for row in lb.stats(service)["instances"]}


# -- a static file reloaded in the background -----------------------------------------------


def test_static_reload_keeps_the_last_good_state_whole_and_converges(
    tmp_path: Path, fragile_scheduler: Fragile, whole: Whole, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"orders": [entry(1), entry(2)]}))
    registry = StaticRegistry.from_file(path, reload_interval=0.02)
    with lbclient.LoadBalancer(registry, scheduler=fragile_scheduler("wrr")) as lb:
        state = lb.service("orders")
        assert set(whole(state)) == {"127.0.0.1:1", "127.0.0.1:2"}

        caplog.set_level(logging.INFO, logger="lbclient")
        # Instance 1 goes away and a new one arrives that the scheduler cannot take.
        rewrite(path, {"orders": [entry(2), entry(3, explode=True)]}, 1)
        wait_for(lambda: lb.stats("orders")["registry_error"] is not None)
        error = lb.stats("orders")["registry_error"]
        assert "OverflowError" in error
        assert "127.0.0.1:3" in error
        assert set(whole(state)) == {"127.0.0.1:1", "127.0.0.1:2"}  # removed 1 still in force
        assert lb.stats("orders")["stale_seconds"] is not None
        assert {lb.pick("orders").instance.port for _ in range(20)} == {1, 2}

        # The same bad answer again (a touch of the file) logs nothing new.
        rewrite(path, {"orders": [entry(2), entry(3, explode=True)]}, 2)
        time.sleep(0.3)
        assert set(whole(state)) == {"127.0.0.1:1", "127.0.0.1:2"}
        rejected = [r for r in caplog.records if "could not be applied" in r.getMessage()]
        assert len(rejected) == 1, [r.getMessage() for r in caplog.records]

        rewrite(path, {"orders": [entry(2), entry(4)]}, 3)
        wait_for(lambda: ports(lb) == {2, 4})
        assert set(whole(state)) == {"127.0.0.1:2", "127.0.0.1:4"}
        assert lb.stats("orders")["registry_error"] is None
        assert lb.stats("orders")["stale_seconds"] is None
        assert {lb.pick("orders").instance.port for _ in range(20)} == {2, 4}
        assert any("apply again" in r.getMessage() for r in caplog.records)
    assert [t for t in threading.enumerate() if t.name.startswith("lbclient-watch-")] == []


def test_a_first_answer_that_cannot_apply_is_visible_and_the_watch_recovers(
    tmp_path: Path, fragile_scheduler: Fragile, whole: Whole
) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"orders": [entry(1, explode=True)]}))
    registry = StaticRegistry.from_file(path, reload_interval=0.02)
    with lbclient.LoadBalancer(registry, scheduler=fragile_scheduler()) as lb:
        with pytest.raises(lbclient.NoAvailableInstance, match="OverflowError"):
            lb.pick("orders")
        assert set(whole(lb.service("orders"))) == set()
        rewrite(path, {"orders": [entry(5)]}, 1)
        wait_for(lambda: ports(lb) == {5})
        assert lb.pick("orders").instance.port == 5
        assert lb.stats("orders")["registry_error"] is None


def test_static_reload_serves_services_added_to_the_file_after_startup(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"orders": ["127.0.0.1:1"]}))
    with lbclient.LoadBalancer(StaticRegistry.from_file(path, reload_interval=0.02)) as lb:
        assert lb.pick("orders").instance.port == 1
        rewrite(path, {"orders": ["127.0.0.1:1"], "payments": ["127.0.0.1:7"]}, 1)
        assert lb.pick("payments").instance.port == 7
        rewrite(path, {"orders": ["127.0.0.1:1"], "payments": ["127.0.0.1:8"]}, 2)
        wait_for(lambda: ports(lb, "payments") == {8})


async def test_static_reload_serves_added_services_in_asyncio(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"orders": ["127.0.0.1:1"]}))
    async with lbclient.LoadBalancer(StaticRegistry.from_file(path, reload_interval=0.02)) as lb:
        rewrite(path, {"payments": ["127.0.0.1:7"]}, 1)
        assert (await lb.apick("payments")).instance.port == 7
        with pytest.raises(lbclient.ServiceNotFound):
            await lb.apick("orders")  # gone from the file before its first use


def test_a_filter_rebuild_that_fails_keeps_the_scheduler_in_force(
    fragile_scheduler: Fragile,
) -> None:
    state = ServiceState("orders", ServiceConfig(scheduler=fragile_scheduler()))
    state.publish([ServiceInstance("orders", "127.0.0.1", 1)])
    before = state.scheduler
    # A change that only a rebuild sees (as slow start's ramp): the instance becomes unbuildable.
    endpoint = state.endpoints["127.0.0.1:1"]
    marked = ServiceInstance("orders", "127.0.0.1", 1, weight=3, metadata={"m": "explode"})
    endpoint.set_instance(marked)
    state.invalidate()
    assert state.scheduler is before
    assert endpoint.weight == 1.0  # the weight the scheduler in force was built with
    assert "OverflowError" in (state.stats()["scheduler_error"] or "")
    endpoint.set_instance(ServiceInstance("orders", "127.0.0.1", 1, weight=2))
    state.invalidate()
    assert state.scheduler is not before
    assert state.stats()["scheduler_error"] is None
    state.close()


# -- the watch drivers, with a sink that cannot take an answer -------------------------------


class Feed:
    """A registry's poll fed by the test: each answer is taken from a queue, in order."""

    def __init__(self) -> None:
        self.answers: queue.Queue[Sequence[ServiceInstance] | Exception] = queue.Queue()
        self.cursor = 0

    def poll(self, cursor: int | None) -> tuple[Sequence[ServiceInstance] | None, int]:
        try:
            answer = self.answers.get(timeout=0.05)
        except queue.Empty:
            return None, cursor or 0
        if isinstance(answer, Exception):
            raise answer
        self.cursor += 1
        return answer, self.cursor

    async def apoll(self, cursor: int | None) -> tuple[Sequence[ServiceInstance] | None, int]:
        return await asyncio.to_thread(self.poll, cursor)


class PickySink:
    """A sink (not a balancer) that raises on an answer with no instance."""

    def __init__(self) -> None:
        self.published: list[Sequence[ServiceInstance]] = []
        self.errors: list[str] = []

    def publish(self, instances: Sequence[ServiceInstance]) -> None:
        if not instances:
            raise ValueError("an empty answer")
        self.published.append(instances)

    def fail(self, error: BaseException) -> None:
        self.errors.append(f"{type(error).__name__}: {error}")

    def heartbeat(self, instance_id: str) -> None:
        return None


def one(port: int) -> list[ServiceInstance]:
    return [ServiceInstance("orders", "127.0.0.1", port)]


def test_thread_watch_survives_a_sink_that_raises_and_logs_once_per_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lbclient.registry")
    feed, sink = Feed(), PickySink()
    policy: WatchPolicy[int] = WatchPolicy("t", sink, min_backoff=0.01, max_backoff=0.02)
    watch = ThreadWatch(policy, feed.poll)
    try:
        for answer in (one(1), [], [], [], one(2)):
            feed.answers.put(answer)
        wait_for(lambda: len(sink.published) == 2)
        assert sink.errors == ["ValueError: an empty answer"] * 3
        assert [p[0].port for p in sink.published] == [1, 2]
        assert policy.cursor == 5  # the rejected answers' cursor was kept: no re-read
        messages = [r.getMessage() for r in caplog.records]
        assert sum("could not be applied" in m for m in messages) == 1, messages
        # A registry error logs once however often it repeats, and once when it ends.
        for _ in range(3):
            feed.answers.put(OSError("down"))
        feed.answers.put(one(3))
        wait_for(lambda: len(sink.published) == 3)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("registry unavailable" in m for m in messages) == 1, messages
        assert sum("reachable again" in m for m in messages) == 1, messages
        assert not watch.stopped
    finally:
        watch.close()


async def test_task_watch_survives_a_sink_that_raises() -> None:
    feed, sink = Feed(), PickySink()
    policy: WatchPolicy[int] = WatchPolicy("t", sink, min_backoff=0.01, max_backoff=0.02)
    watch = TaskWatch(policy, feed.apoll)
    try:
        for answer in (one(1), [], one(2)):
            feed.answers.put(answer)
        start = time.monotonic()
        while len(sink.published) < 2:
            assert time.monotonic() - start < 15, "the watch never converged"
            await asyncio.sleep(0.01)
        assert sink.errors == ["ValueError: an empty answer"]
    finally:
        await watch.aclose()


# -- fuzzed: any sequence of good and unusable answers, any scheduler -------------------------

POOL = [
    ServiceInstance("orders", "127.0.0.1", 8000 + n, weight=float(1 + n % 3), zone="z")
    for n in range(6)
]
MARKED = ServiceInstance("orders", "127.0.0.1", 8100, metadata={"m": "explode"})

snapshots = st.lists(
    st.tuples(st.lists(st.sampled_from(POOL), unique=True, max_size=6), st.booleans()),
    min_size=1,
    max_size=8,
)


CHAINS: list[dict[str, Any]] = [{}, {"slow_start": lbclient.SlowStart()}, {"subset_size": 3}]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    base=st.sampled_from(available_schedulers()),
    chain=st.sampled_from(CHAINS),
    sequence=snapshots,
    seed=st.integers(0, 99),
)
def test_any_sequence_of_answers_leaves_the_last_good_state_whole(
    fragile_scheduler: Fragile,
    whole: Whole,
    base: str,
    chain: dict[str, Any],
    sequence: list[tuple[list[ServiceInstance], bool]],
    seed: int,
) -> None:
    config = ServiceConfig(scheduler=fragile_scheduler(base), **chain)
    state = ServiceState("orders", config, rng=random.Random(seed))
    feed = Feed()
    policy: WatchPolicy[int] = WatchPolicy("fuzz", state)
    good: set[str] = set()
    seen: list[Any] = []  # every endpoint ever in force, to count its in-flight at the end
    try:
        for instances, unusable in sequence:
            answer = [*instances, MARKED] if unusable else instances
            # A request in flight across the change, finished after it.
            handle = state.pick() if state.scheduler is not None else None
            feed.answers.put(answer)
            policy.succeeded(*feed.poll(policy.cursor))  # a watch's step, without its thread
            members = set(whole(state))
            error = state.stats()["registry_error"]
            if error is None:  # applied as a whole
                good = {i.id for i in answer}
            else:  # rejected as a whole: the marked instance reached the scheduler
                assert unusable
                assert "OverflowError" in error
            assert members == good
            if unusable and "subset_size" not in chain:  # a subset may leave the mark out
                assert error is not None
            if handle is not None:
                handle.done()
                seen.append(handle.endpoint)  # perhaps removed meanwhile: still counted back
            if state.scheduler is not None:
                with state.pick() as after:
                    assert after.instance.id in good
            seen.extend(state.endpoints.values())
        assert all(endpoint.in_flight == 0 for endpoint in seen)
    finally:
        state.close()
