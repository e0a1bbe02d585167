"""ConsulRegistrar and AsyncConsulRegistrar through real py-consul against ConsulTestServer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from consul_helpers import lbclient_threads, wait_until

import lbclient
from lbclient.consul import AsyncConsulRegistrar, ConsulRegistrar, ConsulRegistry
from lbclient.testing.consul import ConsulTestServer

ROOT = Path(__file__).resolve().parents[2]


def options(server: ConsulTestServer, **extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "consul_port": server.port, "address": "127.0.0.1", "ttl": "3s", "interval": 0.05,
        "handle_sigterm": False,
    }  # fmt: skip
    base.update(extra)
    return base


def instance_ids(server: ConsulTestServer) -> list[str]:
    registry = ConsulRegistry(port=server.port)
    try:
        return sorted(i.id for i in registry.resolve("orders"))
    except lbclient.ServiceNotFound:
        return []
    finally:
        registry.close()


def test_registers_heartbeats_reports_health_and_deregisters(server, backends):
    a, _ = backends
    health = {"value": "passing"}
    registrar = ConsulRegistrar(
        "orders", a.port, service_id="a", tags=["v1"], meta={"zone": "z1"},
        weights={"Passing": 5, "Warning": 1}, deregister_critical_after="2m",
        health=lambda: (health["value"], f"app says {health['value']}"),
        **options(server),
    )  # fmt: skip
    with registrar:
        check = server.check("service:a")
        assert (check["Status"], check["Type"]) == ("passing", "ttl")
        assert server.state.checks["service:a"].ttl == 3.0
        assert server.state.checks["service:a"].deregister_after == 120.0
        lb = lbclient.LoadBalancer(ConsulRegistry(port=server.port))
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client:
            assert client.get("http://orders/").json()["backend"] == "a"
        instance = lb.pick("orders")
        instance.__exit__(None, None, None)
        assert (instance.instance.weight, instance.instance.zone) == (5.0, "z1")
        health["value"] = "warning"
        wait_until(lambda: server.check("service:a")["Status"] == "warning")
        wait_until(lambda: lb.stats("orders")["instances"][0]["weight"] == 1.0)
        assert server.check("service:a")["Output"] == "app says warning"
        health["value"] = "critical"
        wait_until(lambda: lb.stats("orders")["instances"] == [])
        health["value"] = "passing"
        wait_until(lambda: len(lb.stats("orders")["instances"]) == 1)
        lb.close()
    assert server.service_ids() == []
    assert lbclient_threads() == []


def test_reregisters_when_the_agent_forgets_the_service(server, backends):
    with ConsulRegistrar("orders", backends[0].port, service_id="a", **options(server)):
        server.state.deregister("a")  # an agent restart without its state, or the reaper
        wait_until(lambda: server.service_ids() == ["a"])
        wait_until(lambda: server.check("service:a")["Status"] == "passing")


def test_health_callback_errors_report_critical(server, backends):
    def broken() -> str:
        raise RuntimeError("db down")

    with ConsulRegistrar("orders", backends[0].port, service_id="a", health=broken,
                         **options(server)):  # fmt: skip
        assert server.check("service:a")["Status"] == "critical"
        wait_until(lambda: "db down" in server.check("service:a")["Output"])  # the next beat
        assert instance_ids(server) == []


def test_survives_a_consul_outage(server, backends):
    with ConsulRegistrar("orders", backends[0].port, service_id="a", **options(server)) as reg:
        server.down()
        wait_until(lambda: reg.core.errors >= 2)  # heartbeats fail, the thread carries on
        server.state.deregister("a")  # the agent came back without our service
        server.up()
        wait_until(lambda: server.service_ids() == ["a"])
        wait_until(lambda: reg.core.errors == 0)


def test_starts_while_consul_is_down_and_registers_when_it_comes_back(server, backends):
    server.down()
    with ConsulRegistrar("orders", backends[0].port, service_id="a", **options(server)):
        assert server.service_ids() == []
        server.up()
        wait_until(lambda: server.service_ids() == ["a"])
    assert server.service_ids() == []


def test_a_refused_token_fails_at_start_with_the_missing_permission(backends):
    with ConsulTestServer(acl_tokens={"reader": "read"}) as srv:
        registrar = ConsulRegistrar("orders", backends[0].port, token="reader", **options(srv))
        with pytest.raises(lbclient.RegistryAccessDenied, match="'service:write' on 'orders'"):
            registrar.start()
        assert lbclient_threads() == []


def test_option_errors_are_configuration_errors():
    with pytest.raises(lbclient.ConfigurationError, match="interval < ttl"):
        ConsulRegistrar("orders", 8001, ttl="1s", interval="2s")
    with pytest.raises(lbclient.ConfigurationError, match="Go duration"):
        ConsulRegistrar("orders", 8001, ttl="ten seconds")
    with pytest.raises(lbclient.ConfigurationError, match="port"):
        ConsulRegistrar("orders", 0)
    default = ConsulRegistrar("orders", 8001)
    assert default.core.interval == pytest.approx(10 / 3)
    assert default.service_id.startswith("orders-")
    assert default.service_id.endswith("-8001")


async def test_async_registrar_end_to_end(server, backends):
    a, b = backends
    state = {"b": "passing"}

    async def b_health() -> str:
        await asyncio.sleep(0)
        return state["b"]

    async with (
        AsyncConsulRegistrar("orders", a.port, service_id="a", **options(server)),
        AsyncConsulRegistrar("orders", b.port, service_id="b", health=b_health, **options(server)),
        lbclient.LoadBalancer(ConsulRegistry(port=server.port)) as lb,
        httpx.AsyncClient(transport=lbclient.AsyncLoadBalancedTransport(lb)) as client,
    ):
        seen = {(await client.get("http://orders/")).json()["backend"] for _ in range(6)}
        assert seen == {"a", "b"}
        state["b"] = "critical"
        started = time.monotonic()
        while len(lb.stats("orders")["instances"]) != 1:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.005)
        for _ in range(4):
            assert (await client.get("http://orders/")).json()["backend"] == "a"
        server.state.deregister("a")
        while server.service_ids("orders") != ["a", "b"]:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.005)
    assert server.service_ids() == []
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("lbclient-")]


SCRIPT = textwrap.dedent(
    """
    import sys, time, lbclient
    registrar = lbclient.ConsulRegistrar("orders", 8001, service_id="proc", address="127.0.0.1",
                                         consul_port=int(sys.argv[1]), ttl="30s")
    registrar.start()
    print("registered", flush=True)
    if sys.argv[2] == "sigterm":
        time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["sigterm", "exit"])
def test_deregisters_on_sigterm_and_at_exit_without_swallowing_the_signal(server, how):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(server.port), how],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "registered"
    if how == "sigterm":
        assert server.service_ids() == ["proc"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM  # still killed by the signal, as by default
    else:
        assert proc.wait(30) == 0
    proc.stdout.close()
    assert server.service_ids() == []


def test_the_example_runs():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "consul_two_services.py")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "both registered: {'orders-1': 10, 'orders-2': 10}"
    assert lines[-1] == "after orders-2 left: {'orders-1': 10}"
