"""Silence windows and the panic threshold, with real backends and real probes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

import lbclient
from lbclient.health import HttpHealthCheck
from lbclient.testing import HTTPBackend

from .conftest import FAST_PROBE, client, row, usable_ids, wait_until

Make = Callable[[int], list[HTTPBackend]]


def test_a_mute_instance_is_taken_out_until_it_beats_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lbclient.health")
    ids = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    lb = lbclient.LoadBalancer({"svc": ids}, heartbeat_timeout=0.2, outlier=None)
    with lb:
        state = lb.service("svc")
        loud, mute = ids[:2], ids[2]

        def beat() -> bool:
            for instance_id in loud:
                state.heartbeat(instance_id)  # what a registry does on a TTL pass
            return mute not in usable_ids(lb, "svc")

        wait_until(beat)
        assert usable_ids(lb, "svc") == set(loud)
        assert row(lb, "svc", mute)["silent"] is True
        state.heartbeat(mute)
        assert mute in usable_ids(lb, "svc")  # back at once, not at the next tick
        assert row(lb, "svc", mute)["silent"] is False
    messages = [r.getMessage() for r in caplog.records]
    assert any("silent for more than" in m for m in messages)
    assert any("signs of life again" in m for m in messages)


def test_passing_probes_are_signs_of_life(backends: Make) -> None:
    (alive,) = backends(1)
    dead = "127.0.0.1:1"
    lb = lbclient.LoadBalancer(
        {"svc": [alive.address, dead]},
        heartbeat_timeout=0.3,
        health_check=HttpHealthCheck(unhealthy_threshold=100, **FAST_PROBE),
        panic_threshold=0,
    )
    with lb:  # no request is ever sent: only probes speak for the instances
        wait_until(lambda: row(lb, "svc", dead)["silent"] is True)
        assert row(lb, "svc", dead)["healthy"] is False  # first check decided
        assert row(lb, "svc", alive.address)["silent"] is False
        assert usable_ids(lb, "svc") == {alive.address}


def test_successful_requests_are_signs_of_life(backends: Make) -> None:
    (a,) = backends(1)
    lb = lbclient.LoadBalancer({"svc": [a.address]}, heartbeat_timeout=0.2, outlier=None)
    with lb, client(lb) as http:
        start = time.monotonic()

        def three_windows_of_traffic() -> bool:
            assert http.get("http://svc/x").status_code == 200
            assert row(lb, "svc", a.address)["silent"] is False
            return time.monotonic() - start > 0.6

        wait_until(three_windows_of_traffic)
        wait_until(lambda: row(lb, "svc", a.address)["silent"] is True)  # then it goes quiet


def test_heartbeat_from_an_unknown_instance_is_ignored() -> None:
    lb = lbclient.LoadBalancer({"svc": ["127.0.0.1:1"]}, heartbeat_timeout=1)
    with lb:
        lb.service("svc").heartbeat("nobody:1")
        assert usable_ids(lb, "svc") == {"127.0.0.1:1"}


def _probed_lb(servers: list[HTTPBackend], **settings: object) -> lbclient.LoadBalancer:
    check = HttpHealthCheck(unhealthy_threshold=1, healthy_threshold=1, **FAST_PROBE)
    return lbclient.LoadBalancer(
        {"svc": [s.address for s in servers]}, health_check=check, **settings
    )


def test_panic_fails_open_across_all_instances(
    backends: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbclient.health")
    servers = backends(4)
    lb = _probed_lb(servers)
    with lb, client(lb) as http:
        servers[0].health_status = 503
        wait_until(lambda: row(lb, "svc", servers[0].address)["healthy"] is False)
        # The verdict is visible a moment before the usable list is rebuilt from it.
        wait_until(lambda: servers[0].address not in usable_ids(lb, "svc"))
        assert len(usable_ids(lb, "svc")) == 3  # 3 of 4 healthy: above 50%, no panic
        for s in servers[1:3]:
            s.health_status = 503
        wait_until(lambda: lb.service("svc").stats()["panic"] is True)
        assert usable_ids(lb, "svc") == {s.address for s in servers}
        names = {http.get("http://svc/x").json()["backend"] for _ in range(8)}
        assert names == {s.name for s in servers}
        for s in servers:
            s.health_status = 200
        wait_until(lambda: lb.service("svc").stats()["panic"] is False)
    messages = [r.getMessage() for r in caplog.records]
    assert any("only 1 of 4 instance(s) healthy" in m for m in messages)
    assert any("out of panic" in m for m in messages)


def test_panic_fails_fast_when_configured(backends: Make) -> None:
    servers = backends(3)
    lb = _probed_lb(servers, fail_open=False)
    with lb:
        for s in servers[:2]:
            s.health_status = 503
        wait_until(lambda: lb.service("svc").stats()["panic"] is True)
        with pytest.raises(lbclient.NoAvailableInstance, match="panic threshold") as info:
            lb.pick("svc")
        assert info.value.service == "svc"
        servers[0].health_status = 200
        wait_until(lambda: lb.service("svc").stats()["panic"] is False)
        assert lb.pick("svc").instance.address in {servers[0].address, servers[2].address}


def test_zero_instances_raise_at_once() -> None:
    lb = lbclient.LoadBalancer({"svc": []}, fail_open=True)
    with lb, pytest.raises(lbclient.NoAvailableInstance, match="registry lists no instance"):
        lb.pick("svc")


def test_panic_threshold_zero_never_panics(backends: Make) -> None:
    servers = backends(2)
    lb = _probed_lb(servers, panic_threshold=0)
    with lb:
        for s in servers:
            s.health_status = 503
        wait_until(lambda: not lb.service("svc").usable)
        with pytest.raises(lbclient.NoAvailableInstance, match="unhealthy or ejected"):
            lb.pick("svc")


def test_bad_panic_threshold_is_refused() -> None:
    with pytest.raises(lbclient.ConfigurationError, match="panic_threshold"):
        lbclient.LoadBalancer({"svc": []}, panic_threshold=50)
