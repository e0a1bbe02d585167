"""LoadBalancer: configuration, errors, lifecycle, stats, listeners and the pick handle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

import lbclient
from lbclient import (
    ConfigurationError,
    Failure,
    LoadBalancerListener,
    NoAvailableInstance,
    Outcome,
    PickContext,
    RegistryUnavailable,
    ServiceInstance,
    ServiceNotFound,
    StaticRegistry,
)
from lbclient.testing import HTTPBackend

from ._support import assert_settled, instances, send

SERVICES = {"orders": ["127.0.0.1:8001", "127.0.0.1:8002"], "search": ["127.0.0.1:9001"]}


class CountingRegistry(StaticRegistry):
    """A real StaticRegistry that also counts how often it is asked."""

    def __init__(self, services: dict[str, list[str]]) -> None:
        super().__init__(services)
        self.resolves = 0

    def resolve(self, service: str) -> Sequence[ServiceInstance]:
        self.resolves += 1
        return super().resolve(service)


class BrokenRegistry(lbclient.Registry):
    """A registry whose backend cannot be reached."""

    def resolve(self, service: str) -> Sequence[ServiceInstance]:
        raise OSError("connection refused by registry.internal:8500")


def test_per_service_overrides_merge_over_defaults() -> None:
    policy = lbclient.RetryPolicy(attempts=5)
    lb = lbclient.LoadBalancer(
        SERVICES, scheduler="random", retry=policy, services={"search": {"scheduler": "rr"}}
    )
    assert lb.config_for("orders").scheduler == "random"
    assert lb.config_for("search").scheduler == "rr"
    assert lb.config_for("search").retry is policy  # what is not overridden is inherited
    lb.pick("orders").done()
    lb.pick("search").done()
    assert lb.stats("orders")["scheduler"] == "random"
    assert lb.stats("search")["scheduler"] == "round_robin"


def test_a_service_config_object_is_taken_as_is() -> None:
    config = lbclient.ServiceConfig(scheduler="rr", zone="eu-1a")
    lb = lbclient.LoadBalancer(SERVICES, services={"orders": config})
    assert lb.config_for("orders") is config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"schedular": "random"},
            r"unknown setting 'schedular', did you mean 'scheduler'\? \(valid: .*zone",
        ),
        (
            {"services": {"orders": {"retyr": 3}}},
            r"services\['orders'\]: unknown setting 'retyr', did you mean 'retry'\?",
        ),
        (  # the closest name since Envoy's max_retries joined the settings
            {"services": {"orders": {"retries": 3}}},
            r"services\['orders'\]: unknown setting 'retries', did you mean 'max_retries'\?",
        ),
        ({"scheduler": "fastest"}, r"unknown scheduler 'fastest'; choose one of: .*round_robin"),
        ({"scheduler": "round_robbin"}, r"unknown scheduler 'round_robbin', did you mean 'round_"),
        ({"ewma_decay": 0}, r"ewma_decay=0 is invalid: expected a finite number in \[0.001"),
        ({"scheduler_options": {"bogus": 1}}, r"unknown round_robin option 'bogus' \(valid: none"),
    ],
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        lbclient.LoadBalancer(SERVICES, **kwargs)  # type: ignore[arg-type]  # no pick needed


def test_bad_registry_type() -> None:
    with pytest.raises(ConfigurationError, match="registry must be a Registry, a URI or a mapping"):
        lbclient.LoadBalancer(42)  # type: ignore[arg-type]


def test_bad_retry_policy() -> None:
    with pytest.raises(
        ConfigurationError, match=r"RetryPolicy.attempts=0 is invalid: .* \[1, 100\]"
    ):
        lbclient.RetryPolicy(attempts=0)


def test_unknown_service_and_its_negative_cache() -> None:
    registry = CountingRegistry({"orders": ["127.0.0.1:1"]})
    lb = lbclient.LoadBalancer(registry)
    with pytest.raises(ServiceNotFound, match="'ordres'") as caught:
        lb.pick("ordres")
    assert caught.value.service == "ordres"
    assert registry.resolves == 1
    for _ in range(5):
        with pytest.raises(ServiceNotFound):
            lb.pick("ordres")
    assert registry.resolves == 1  # remembered: unknown hosts do not hammer the registry
    lb.pick("orders").done()
    lb.pick("orders").done()
    assert registry.resolves == 2  # resolved once, then served from the state


async def test_unknown_service_async() -> None:
    lb = lbclient.LoadBalancer(SERVICES)
    with pytest.raises(ServiceNotFound):
        await lb.apick("nope")
    handle = await lb.apick("orders")
    handle.done()
    assert_settled(lb)


def test_zero_instances_raise_at_once() -> None:
    lb = lbclient.LoadBalancer({"orders": []})
    with pytest.raises(NoAvailableInstance, match="the registry lists no instance") as caught:
        lb.pick("orders")
    assert caught.value.service == "orders"
    assert "stats()" in str(caught.value)  # the message says where to look


def test_registry_failure_is_translated() -> None:
    lb = lbclient.LoadBalancer(BrokenRegistry())
    with pytest.raises(RegistryUnavailable, match="OSError: connection refused") as caught:
        lb.pick("orders")
    assert isinstance(caught.value.__cause__, OSError)


def test_close_refuses_further_picks() -> None:
    lb = lbclient.LoadBalancer(SERVICES)
    handle = lb.pick("orders")
    lb.close()
    handle.done()  # a request that was running when the balancer closed still completes
    with pytest.raises(NoAvailableInstance, match="closed"):
        lb.pick("orders")
    with pytest.raises(NoAvailableInstance, match="closed"):
        lb.pick("search")  # never used before the close


async def test_close_async() -> None:
    async with lbclient.LoadBalancer(SERVICES) as lb:
        (await lb.apick("orders")).done()
    with pytest.raises(NoAvailableInstance, match="closed"):
        await lb.apick("orders")


def test_stats_shape() -> None:
    lb = lbclient.LoadBalancer(SERVICES, scheduler="round_robin")
    assert lb.stats() == {}
    with lb.pick("orders"):
        stats = lb.stats()
    assert list(stats) == ["orders"]
    service = stats["orders"]
    assert service["service"] == "orders"
    assert service["scheduler"] == "round_robin"
    assert service["usable"] == 2
    assert service["registry_error"] is None
    assert service["stale_seconds"] is None
    assert isinstance(service["updated_at"], float)
    assert service["retries_refused_by_budget"] == 0
    assert isinstance(service["retry_budget"], float)
    rows = service["instances"]
    assert {row["address"] for row in rows} == {"127.0.0.1:8001", "127.0.0.1:8002"}
    for row in rows:
        assert {
            "id",
            "address",
            "zone",
            "usable",
            "weight",
            "in_flight",
            "picks",
            "successes",
            "failures",
            "latency_ewma_ms",
        } <= set(row)
    assert sum(row["in_flight"] for row in rows) == 1
    assert lb.stats("orders")["instances"][0]["in_flight"] == 0
    assert lb.stats("search")["instances"][0]["picks"] == 0  # resolved on first use, as pick
    assert set(lb.stats()) == {"orders", "search"}
    with pytest.raises(ServiceNotFound, match="nope"):
        lb.stats("nope")  # as lb.pick("nope")


class Recorder(LoadBalancerListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def on_pick(self, service: str, instance: ServiceInstance, context: PickContext) -> None:
        self.events.append(("pick", service, instance.address))

    def on_complete(self, service: str, instance: ServiceInstance, outcome: Outcome) -> None:
        self.events.append(("complete", service, outcome))

    def on_instances(self, service: str, usable: Sequence[ServiceInstance]) -> None:
        self.events.append(("instances", service, sorted(i.address for i in usable)))


class Broken(LoadBalancerListener):
    def on_pick(self, service: str, instance: ServiceInstance, context: PickContext) -> None:
        raise RuntimeError("metrics backend down")

    def on_complete(self, service: str, instance: ServiceInstance, outcome: Outcome) -> None:
        raise RuntimeError("metrics backend down")

    def on_instances(self, service: str, usable: Sequence[ServiceInstance]) -> None:
        raise RuntimeError("metrics backend down")


def test_listeners_see_instances_picks_and_outcomes() -> None:
    recorder = Recorder()
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:8001"]}, listeners=[recorder])
    with lb.pick("orders"):
        pass
    handle = lb.pick("orders")
    handle.done(Failure.GATEWAY, status=503)
    kinds = [event[0] for event in recorder.events]
    assert kinds == ["instances", "pick", "complete", "pick", "complete"]
    assert recorder.events[0] == ("instances", "orders", ["127.0.0.1:8001"])
    assert recorder.events[1] == ("pick", "orders", "127.0.0.1:8001")
    ok, failed = recorder.events[2][2], recorder.events[4][2]
    assert isinstance(ok, Outcome)
    assert ok.ok
    assert ok.latency >= 0
    assert isinstance(failed, Outcome)
    assert failed.failure is Failure.GATEWAY
    assert failed.status == 503
    assert not failed.ok


def test_a_failing_listener_never_breaks_requests(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    with HTTPBackend("a") as backend:
        lb = lbclient.LoadBalancer({"orders": [backend.address]}, listeners=[Broken(), recorder])
        with caplog.at_level(logging.ERROR, logger="lbclient"):
            response = send(mode, lb, "GET", "http://orders/x")  # type: ignore[arg-type]
    assert response.status_code == 200
    assert [e[0] for e in recorder.events] == ["instances", "pick", "complete"]
    logged = " ".join(record.getMessage() for record in caplog.records)
    for hook in ("on_pick", "on_complete", "on_instances"):
        assert hook in logged
    assert_settled(lb)


def counts(lb: lbclient.LoadBalancer) -> tuple[int, int, int, int]:
    row = instances(lb, "orders")[0]
    return row["picks"], row["successes"], row["failures"], row["in_flight"]


def test_handle_context_manager_reports_success_and_failure() -> None:
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]})
    with lb.pick("orders") as handle:
        assert counts(lb) == (1, 0, 0, 1)
        assert handle.service == "orders"
        assert handle.instance.port == 1
    assert counts(lb) == (1, 1, 0, 0)
    with pytest.raises(ConnectionRefusedError), lb.pick("orders"):
        raise ConnectionRefusedError
    assert counts(lb) == (2, 1, 1, 0)


def test_handle_cancellation_releases_without_blaming() -> None:
    recorder = Recorder()
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]}, listeners=[recorder])
    with pytest.raises(asyncio.CancelledError), lb.pick("orders"):
        raise asyncio.CancelledError
    with pytest.raises(KeyboardInterrupt), lb.pick("orders"):
        raise KeyboardInterrupt
    lb.pick("orders").cancel()
    assert counts(lb) == (3, 0, 0, 0)
    outcomes = [e[2] for e in recorder.events if e[0] == "complete"]
    assert all(isinstance(o, Outcome) and o.cancelled and not o.ok for o in outcomes)


def test_done_is_idempotent() -> None:
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]})
    handle = lb.pick("orders")
    handle.done()
    handle.done(Failure.SERVER)
    handle.cancel()
    assert handle.finished
    assert counts(lb) == (1, 1, 0, 0)

    def report_then_raise() -> None:
        with lb.pick("orders") as handle:
            handle.done(Failure.GATEWAY, status=503)
            raise ValueError("late")  # the explicit report stands

    with pytest.raises(ValueError, match="late"):
        report_then_raise()
    assert counts(lb) == (2, 1, 1, 0)


async def test_handle_async_context_manager() -> None:
    lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:1"]})
    async with await lb.apick("orders"):
        await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with await lb.apick("orders"):
            raise TimeoutError
    assert counts(lb) == (2, 1, 1, 0)


def test_exclude_avoids_instances_while_any_is_left() -> None:
    lb = lbclient.LoadBalancer(SERVICES)
    context = PickContext(exclude=frozenset({"127.0.0.1:8001"}))
    assert {lb.pick("orders", context).instance.port for _ in range(20)} == {8002}
    everything = PickContext(exclude=frozenset({"127.0.0.1:8001", "127.0.0.1:8002"}))
    assert lb.pick("orders", everything).instance.port in (8001, 8002)  # better than nothing


def test_the_negative_cache_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import lbclient._balancer

    monkeypatch.setattr(lbclient._balancer, "NOT_FOUND_TTL", 0.05)
    registry = CountingRegistry({"orders": ["127.0.0.1:1"]})
    lb = lbclient.LoadBalancer(registry)
    with pytest.raises(ServiceNotFound):
        lb.pick("payments")
    time.sleep(0.1)
    with pytest.raises(ServiceNotFound):
        lb.pick("payments")
    assert registry.resolves == 2  # asked again once the answer was stale
