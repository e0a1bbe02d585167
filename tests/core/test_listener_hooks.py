"""The listener hooks exporters are built on, driven by real backends and a real file registry."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import lbclient
from lbclient import Failure, LoadBalancerListener, Outcome, PickHandle, ServiceInstance
from lbclient.testing import HTTPBackend

from ._support import Mode, assert_settled, send

HOOKS = [name for name in vars(LoadBalancerListener) if name.startswith("on_")]


class Recorder(LoadBalancerListener):
    """Records every hook call as ``(hook, args)``; ``wait_for`` blocks until one shows up."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = threading.Condition()

    def _add(self, hook: str, *args: Any) -> None:
        with self._changed:
            self.events.append((hook, args))
            self._changed.notify_all()

    def named(self, hook: str) -> list[tuple[Any, ...]]:
        with self._changed:
            return [args for name, args in self.events if name == hook]

    def wait_for(
        self, hook: str, test: Callable[[tuple[Any, ...]], bool] = lambda args: True
    ) -> tuple[Any, ...]:
        deadline = time.monotonic() + 20
        with self._changed:
            while True:
                for name, args in self.events:
                    if name == hook and test(args):
                        return args
                left = deadline - time.monotonic()
                assert left > 0, f"no {hook} event; got {[e[0] for e in self.events]}"
                self._changed.wait(left)

    def on_attempt(self, handle: PickHandle) -> None:
        self._add("on_attempt", handle)

    def on_attempt_end(self, handle: PickHandle, outcome: Outcome) -> None:
        self._add("on_attempt_end", handle, outcome)

    def on_retry(self, service: str, attempt: int, failure: Failure | None) -> None:
        self._add("on_retry", service, attempt, failure)

    def on_retry_refused(self, service: str, attempt: int, failure: Failure | None) -> None:
        self._add("on_retry_refused", service, attempt, failure)

    def on_instance_states(self, service: str, counts: Mapping[str, int]) -> None:
        self._add("on_instance_states", service, dict(counts))

    def on_ejection(
        self, service: str, instance: ServiceInstance, reason: str, detail: str
    ) -> None:
        self._add("on_ejection", service, instance, reason, detail)

    def on_readmission(self, service: str, instance: ServiceInstance, why: str) -> None:
        self._add("on_readmission", service, instance, why)

    def on_probe(self, service: str, instance: ServiceInstance, passed: bool, detail: str) -> None:
        self._add("on_probe", service, instance, passed, detail)

    def on_registry_update(self, service: str, instances: Sequence[ServiceInstance]) -> None:
        self._add("on_registry_update", service, list(instances))

    def on_registry_error(self, service: str, error: BaseException) -> None:
        self._add("on_registry_error", service, error)

    def on_registry_recovered(self, service: str, stale_seconds: float) -> None:
        self._add("on_registry_recovered", service, stale_seconds)


class Broken(LoadBalancerListener):
    """Raises from every hook."""

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):

            def fail(*args: Any) -> None:
                raise RuntimeError(f"broken {name}")

            return fail
        return super().__getattribute__(name)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_attempts_are_numbered_and_retries_reported(mode: Mode) -> None:
    recorder = Recorder()
    with HTTPBackend("bad") as bad, HTTPBackend("good") as good:
        bad.status = 503
        lb = lbclient.LoadBalancer(
            {"orders": [bad.address, good.address]},
            scheduler="round_robin",
            outlier=None,
            listeners=[recorder],
        )
        for _ in range(4):
            assert send(mode, lb, "GET", "http://orders/x").status_code == 200
    starts = [args[0] for args in recorder.named("on_attempt")]
    ends = [args[0] for args in recorder.named("on_attempt_end")]
    assert sorted(map(id, starts)) == sorted(map(id, ends))  # every attempt ends exactly once
    retried = [h for h in starts if h.instance.port == bad.port]
    assert retried, "round robin sends some first attempts to the failing instance"
    assert all(h.attempt == 1 for h in retried)
    assert {h.attempt for h in starts if h.instance.port == good.port} <= {1, 2}
    assert recorder.named("on_retry") == [("orders", 1, Failure.GATEWAY)] * len(retried)
    outcomes = {args[0].instance.port: args[1] for args in recorder.named("on_attempt_end")}
    assert outcomes[bad.port].status == 503
    assert outcomes[good.port].ok
    assert_settled(lb)


def test_a_spent_retry_budget_is_reported() -> None:
    recorder = Recorder()
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        a.status = b.status = 503
        lb = lbclient.LoadBalancer(
            {"orders": [a.address, b.address]},
            outlier=None,
            listeners=[recorder],
            retry=lbclient.RetryPolicy(attempts=3, budget_ratio=0, budget_min_per_second=0),
        )
        for _ in range(3):
            assert send("sync", lb, "GET", "http://orders/x").status_code == 503
    # The bucket holds one token: one retry goes, every later one is refused.
    assert recorder.named("on_retry") == [("orders", 1, Failure.GATEWAY)]
    refused = recorder.named("on_retry_refused")
    assert refused[0] == ("orders", 2, Failure.GATEWAY)
    assert len(refused) == 3
    assert lb.stats("orders")["retries_refused_by_budget"] == 3


def test_ejection_readmission_and_state_counts() -> None:
    recorder = Recorder()
    with HTTPBackend("bad") as bad, HTTPBackend("good") as good:
        bad.status = 500
        lb = lbclient.LoadBalancer(
            {"orders": [bad.address, good.address]},
            scheduler="round_robin",
            retry=lbclient.NO_RETRY,
            outlier=lbclient.OutlierDetection(consecutive_5xx=2, base_ejection_time=0.3),
            listeners=[recorder],
        )
        lb.service("orders")
        assert recorder.named("on_instance_states")[-1] == (
            "orders",
            {"usable": 2, "ejected": 0, "unhealthy": 0, "silent": 0, "filtered": 0},
        )
        for _ in range(4):
            send("sync", lb, "GET", "http://orders/x")
        service, instance, reason, detail = recorder.wait_for("on_ejection")
        assert (service, instance.port, reason) == ("orders", bad.port, "consecutive_5xx")
        assert "2 consecutive 5xx" in detail
        recorder.wait_for("on_instance_states", lambda args: args[1]["ejected"] == 1)
        _, back, why = recorder.wait_for("on_readmission")
        assert back.port == bad.port
        assert "ejection time" in why
        recorder.wait_for(
            "on_instance_states",
            lambda args: args[1]["usable"] == 2 and args[1]["ejected"] == 0,
        )
        lb.close()


def test_probe_verdicts_and_unhealthy_counts() -> None:
    recorder = Recorder()
    with HTTPBackend("sick") as sick, HTTPBackend("well") as well:
        sick.health_status = 500
        lb = lbclient.LoadBalancer(
            {"orders": [sick.address, well.address]},
            health_check=lbclient.HttpHealthCheck("/health", interval=0.1),
            listeners=[recorder],
        )
        lb.service("orders")
        _, instance, _passed, detail = recorder.wait_for("on_probe", lambda args: not args[2])
        assert instance.port == sick.port
        assert "500" in detail
        recorder.wait_for("on_probe", lambda args: args[1].port == well.port and args[2])
        recorder.wait_for("on_instance_states", lambda args: args[1]["unhealthy"] == 1)
        lb.close()


def test_registry_update_error_and_recovery(tmp_path: Path) -> None:
    recorder = Recorder()
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"orders": ["127.0.0.1:8001"]}))
    registry = lbclient.StaticRegistry.from_file(path, reload_interval=0.05)
    lb = lbclient.LoadBalancer(registry, listeners=[recorder])
    try:
        lb.service("orders")
        assert recorder.named("on_registry_update")[0][1][0].port == 8001
        path.write_text("{not json")
        _, error = recorder.wait_for("on_registry_error")
        assert isinstance(error, lbclient.ConfigurationError)
        path.write_text(json.dumps({"orders": ["127.0.0.1:8002"]}))
        _, stale = recorder.wait_for("on_registry_recovered")
        assert stale > 0
        _, instances = recorder.wait_for("on_registry_update", lambda a: a[1][0].port == 8002)
        assert [i.port for i in instances] == [8002]
    finally:
        lb.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_listener_failing_in_every_hook_never_breaks_requests(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    with HTTPBackend("bad") as bad, HTTPBackend("good") as good:
        bad.status = 503
        lb = lbclient.LoadBalancer(
            {"orders": [bad.address, good.address]},
            scheduler="round_robin",
            outlier=lbclient.OutlierDetection(consecutive_5xx=1),
            listeners=[Broken(), recorder],
        )
        with caplog.at_level(logging.ERROR, logger="lbclient"):
            for _ in range(3):
                assert send(mode, lb, "GET", "http://orders/x").status_code == 200
    logged = " ".join(record.getMessage() for record in caplog.records)
    for hook in ("on_pick", "on_attempt", "on_attempt_end", "on_retry", "on_ejection"):
        assert f"failed in {hook}" in logged
        if hook != "on_pick":  # the recorder does not override it
            assert recorder.named(hook), f"the listener after the broken one missed {hook}"
    assert_settled(lb)


def test_every_hook_is_a_documented_no_op() -> None:
    listener = LoadBalancerListener()
    for hook in HOOKS:
        assert getattr(LoadBalancerListener, hook).__doc__, hook
    assert {"on_retry", "on_retry_refused", "on_ejection", "on_readmission", "on_probe"} <= set(
        HOOKS
    )
    assert listener.on_retry("s", 1, Failure.CONNECT) is None


def test_a_retried_status_that_is_no_failure_is_reported_without_one() -> None:
    recorder = Recorder()
    with HTTPBackend("busy") as busy, HTTPBackend("free") as free:
        busy.status = 429
        lb = lbclient.LoadBalancer(
            {"orders": [busy.address, free.address]},
            scheduler="round_robin",
            retry=lbclient.RetryPolicy(statuses={429}),
            listeners=[recorder],
        )
        for _ in range(2):
            assert send("sync", lb, "GET", "http://orders/x").status_code == 200
    assert recorder.named("on_retry") == [("orders", 1, None)]
    ends = {args[0].instance.port: args[1] for args in recorder.named("on_attempt_end")}
    assert ends[busy.port].status == 429
    assert ends[busy.port].failure is None  # a 429 does not blame the instance
    assert_settled(lb)


class RequestReader(LoadBalancerListener):
    """A listener that reads the request from the pick context (``reads_request`` left True)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def on_pick(self, service: str, instance: ServiceInstance, context: Any) -> None:
        self.urls.append(str(context.attributes["request"].url))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_listener_sees_the_request_unless_it_opts_out(mode: Mode) -> None:
    reader = RequestReader()
    with HTTPBackend("one") as one:
        lb = lbclient.LoadBalancer({"orders": [one.address]}, listeners=[reader])
        assert send(mode, lb, "GET", "http://orders/x?y=1").status_code == 200
        assert_settled(lb)
    assert [url.endswith("/x?y=1") for url in reader.urls] == [True]
    quiet = type("Quiet", (LoadBalancerListener,), {"reads_request": False})()
    for listeners, reads in [([LoadBalancerListener()], True), ([quiet], False)]:
        lb = lbclient.LoadBalancer({"orders": [one.address]}, listeners=listeners)
        assert lb.service("orders").listeners_read_requests is reads
        lb.close()
