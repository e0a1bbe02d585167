"""``lbclient resolve`` and ``lbclient watch`` as real processes against the test registries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import pytest

from lbclient.testing import HTTPBackend, KubernetesTestServer
from lbclient.testing.consul import ConsulTestServer

from .cli_driver import Lines, Terminal, run

REQUIRED = {"id", "address", "host", "port", "zone", "weight", "tags", "metadata"}


@pytest.fixture
def consul_server() -> Iterator[ConsulTestServer]:
    with ConsulTestServer() as server:
        yield server


@pytest.fixture
def agent(consul_server: ConsulTestServer) -> Iterator[Any]:
    client = consul.Consul(host="127.0.0.1", port=consul_server.port)
    yield client
    client.http.session.close()


@pytest.fixture
def k8s(tmp_path: Path) -> Iterator[tuple[KubernetesTestServer, Path]]:
    """A Kubernetes API test server and a kubeconfig file pointing at it."""
    with KubernetesTestServer(token="t0ken", bookmark_interval=0.2) as server:
        config = tmp_path / "kubeconfig"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "test", "cluster": {"server": server.url}}],
                    "users": [{"name": "test", "user": {"token": "t0ken"}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                    "current-context": "test",
                }
            )
        )
        yield server, config


def register(agent: Any, service_id: str, port: int, **extra: Any) -> None:
    agent.agent.service.register("orders", service_id=service_id, address="127.0.0.1",
                                 port=port, **extra)  # fmt: skip


def test_resolve_static_plain_and_json() -> None:
    uri = "static://?orders=127.0.0.1:8001,127.0.0.1:8002"
    plain = run("resolve", uri, "orders")
    assert plain.returncode == 0, plain.stderr
    assert [line.split()[1] for line in plain.stdout.splitlines()] == [
        "127.0.0.1:8001",
        "127.0.0.1:8002",
    ]
    answer = run("resolve", uri, "orders", "--json")
    rows = json.loads(answer.stdout)
    assert [row["port"] for row in rows] == [8001, 8002]
    assert all(set(row) >= REQUIRED for row in rows)


def test_resolve_consul_json_carries_zone_weight_tags_and_health(agent: Any) -> None:
    register(agent, "a", 8001, tags=["v2"], meta={"zone": "eu-1"})
    register(agent, "b", 8002, weights={"Passing": 3, "Warning": 1},
             check={"TTL": "60s", "Status": "warning"})  # fmt: skip
    register(agent, "c", 8003, check={"TTL": "60s", "Status": "critical"})
    port = agent.http.base_uri.rsplit(":", 1)[1]
    answer = run("resolve", f"consul://127.0.0.1:{port}", "orders", "--json")
    assert answer.returncode == 0, answer.stderr
    rows = {row["id"]: row for row in json.loads(answer.stdout)}
    assert sorted(rows) == ["a", "b"]  # the registry drops critical instances itself
    assert rows["a"]["zone"] == "eu-1"
    assert rows["a"]["tags"] == ["v2"]
    assert rows["a"]["health"] == "passing"
    assert (rows["b"]["weight"], rows["b"]["health"]) == (1.0, "warning")
    assert rows["b"]["metadata"]["consul.health"] == "warning"


def test_resolve_kubernetes(k8s: tuple[KubernetesTestServer, Path]) -> None:
    server, config = k8s
    server.scale("shop", "orders", ["10.0.0.1:8080", "10.0.0.2:8080"], zone="z1")
    answer = run("resolve", f"k8s://shop/orders:http?config_file={config}", "orders", "--json")
    assert answer.returncode == 0, answer.stderr
    rows = json.loads(answer.stdout)
    assert [(r["host"], r["port"], r["zone"], r["health"]) for r in rows] == [
        ("10.0.0.1", 8080, "z1", "ready"),
        ("10.0.0.2", 8080, "z1", "ready"),
    ]


@pytest.mark.parametrize(
    ("uri", "service", "message"),
    [
        ("static://?orders=127.0.0.1:8001", "payments", "not in the static registry"),
        ("consul://127.0.0.1:1", "orders", "unavailable"),
        ("zookeeper://x", "orders", "no registry for scheme 'zookeeper'"),
        ("static://?orders=127.0.0.1:0", "orders", "out of range"),
    ],
)
def test_errors_are_one_clear_line(uri: str, service: str, message: str) -> None:
    for command in ("resolve", "watch"):
        answer = run(command, uri, service, "--json")
        assert answer.returncode == 1
        assert message in answer.stderr
        assert "Traceback" not in answer.stderr
        assert answer.stderr.startswith(f"lbclient {command}: error:")


def test_bad_health_check_is_a_usage_error() -> None:
    answer = run("watch", "static://?orders=127.0.0.1:8001", "orders", "--health-check", "udp")
    assert answer.returncode == 2
    assert "expected http:/path, tcp, grpc or grpc:service" in answer.stderr


def test_watch_json_follows_consul(consul_server: ConsulTestServer, agent: Any) -> None:
    register(agent, "a", 8001)
    watch = Lines("watch", f"consul://127.0.0.1:{consul_server.port}", "orders", "--json")
    try:
        first = json.loads(watch.next_line())
        assert [i["id"] for i in first["instances"]] == ["a"]
        assert first["instances"][0]["state"] == "usable"
        assert set(first["instances"][0]) >= REQUIRED
        assert "time" in first
        register(agent, "b", 8002)
        added = json.loads(watch.next_line())
        assert (added["added"], [i["id"] for i in added["instances"]]) == (["b"], ["a", "b"])
        agent.agent.service.deregister("a")
        removed = json.loads(watch.next_line())
        assert (removed["removed"], [i["id"] for i in removed["instances"]]) == (["a"], ["b"])
        consul_server.down()
        stale = json.loads(watch.until(lambda line: '"registry_error": null' not in line))
        assert [i["id"] for i in stale["instances"]] == ["b"]  # the last good list is kept
        consul_server.up()
        watch.until(lambda line: '"registry_error": null' in line)
        code, errors = watch.interrupt()
    finally:
        watch.kill()
    assert code == 130
    assert "Traceback" not in errors


def test_watch_json_follows_kubernetes(k8s: tuple[KubernetesTestServer, Path]) -> None:
    server, config = k8s
    server.scale("shop", "orders", ["10.0.0.1:8080"])
    watch = Lines("watch", f"k8s://shop/orders:http?config_file={config}", "orders", "--json")
    try:
        first = json.loads(watch.next_line())
        assert [i["host"] for i in first["instances"]] == ["10.0.0.1"]
        server.scale("shop", "orders", ["10.0.0.1:8080", "10.0.0.2:8080"])
        grown = json.loads(watch.until(lambda line: "10.0.0.2" in line))
        assert len(grown["instances"]) == 2
        assert len(grown["added"]) == 1
        code, errors = watch.interrupt()
    finally:
        watch.kill()
    assert code == 130
    assert "Traceback" not in errors


def test_watch_plain_lines_without_a_terminal(consul_server: ConsulTestServer, agent: Any) -> None:
    register(agent, "a", 8001)
    watch = Lines("watch", f"consul://127.0.0.1:{consul_server.port}", "orders")
    try:
        assert watch.next_line().endswith("orders: 1 instance(s)\n")
        assert " + a  127.0.0.1:8001" in watch.next_line()
        register(agent, "b", 8002)
        assert " + b  127.0.0.1:8002" in watch.until(lambda line: " + " in line)
        code, errors = watch.interrupt()
    finally:
        watch.kill()
    assert code == 130
    assert "Traceback" not in errors


def cells(shown: str, instance_id: str) -> list[str] | None:
    """The cells of the last table row of ``instance_id`` in ``shown`` (None: not drawn)."""
    rows = [line for line in shown.splitlines() if f"│ {instance_id} " in line]
    return [cell.strip() for cell in rows[-1].split("│")[1:-1]] if rows else None


def test_watch_table_in_a_terminal_with_probes(consul_server: ConsulTestServer, agent: Any) -> None:
    columns = ["", "id", "address", "zone", "weight", "tags", "registry", "state", "probe"]
    with HTTPBackend("a") as a, HTTPBackend("b") as b:
        register(agent, "alpha", a.port)
        terminal = Terminal(
            "watch", f"consul://127.0.0.1:{consul_server.port}", "orders",
            "--health-check", "http:/health", "--interval", "0.2",
        )  # fmt: skip
        try:
            shown = terminal.expect(lambda s: (cells(s, "alpha") or [""] * 9)[8] == "passing")
            row = dict(zip(columns, cells(shown, "alpha") or [], strict=True))
            assert row["address"] == a.address
            assert (row["registry"], row["state"]) == ("passing", "usable")
            register(agent, "beta", b.port)
            shown = terminal.expect(lambda s: cells(s, "beta") is not None)
            assert (cells(shown, "beta") or [])[0] == "+"  # marked as new for a moment
            a.health_status = 503
            shown = terminal.expect(lambda s: (cells(s, "alpha") or [""] * 9)[7] == "unhealthy")
            assert (cells(shown, "alpha") or [])[8] == "failing (HTTP 503)"
            agent.agent.service.deregister("beta")
            shown = terminal.expect(lambda s: (cells(s, "beta") or [""])[0] == "-")
            assert "1 instance(s)" in shown
            code = terminal.interrupt()
        finally:
            terminal.close()
    assert code == 130
    assert "Traceback" not in terminal.output
    assert "KeyboardInterrupt" not in terminal.output
