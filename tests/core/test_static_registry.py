"""StaticRegistry from a mapping, the environment, JSON/TOML files and URIs; scheme lookup."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

import lbclient
from lbclient import ConfigurationError, ServiceNotFound, StaticRegistry, registry_from_uri
from lbclient.registry import available_schemes, registry_class


def addresses(registry: lbclient.Registry, service: str) -> list[str]:
    return [i.address for i in registry.resolve(service)]


def test_mapping() -> None:
    registry = StaticRegistry({"orders": ["h:1", "[::1]:2"], "payments": "p:1,p:2"})
    assert addresses(registry, "orders") == ["h:1", "[::1]:2"]
    assert addresses(registry, "payments") == ["p:1", "p:2"]
    assert registry.services == ("orders", "payments")


def test_unknown_service_lists_the_known_ones() -> None:
    registry = StaticRegistry({"orders": ["h:1"]})
    with pytest.raises(ServiceNotFound, match=r"'ordres' is not in the static registry.*orders"):
        registry.resolve("ordres")


async def test_aresolve_matches_resolve() -> None:
    registry = StaticRegistry({"orders": ["h:1"]})
    assert await registry.aresolve("orders") == registry.resolve("orders")


def test_bad_input_fails_at_construction() -> None:
    with pytest.raises(ConfigurationError, match=r"port 0 is out of range"):
        StaticRegistry({"orders": ["h:0"]})
    with pytest.raises(ConfigurationError, match="takes a mapping"):
        StaticRegistry(["h:1"])  # type: ignore[arg-type]


def test_from_env() -> None:
    environ = {
        "LBCLIENT_SERVICE_ORDER_API": "10.0.0.1:80, 10.0.0.2:80",
        "LBCLIENT_SERVICE_PAYMENTS": "[::1]:9000",
        "PATH": "/usr/bin",
    }
    registry = StaticRegistry.from_env(environ=environ)
    assert addresses(registry, "order-api") == ["10.0.0.1:80", "10.0.0.2:80"]
    assert addresses(registry, "payments") == ["[::1]:9000"]
    assert sorted(registry.services) == ["order-api", "payments"]


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAPP_ORDERS", "h:1")
    assert addresses(StaticRegistry.from_env("MYAPP_"), "orders") == ["h:1"]


def test_from_json_and_toml_files(tmp_path: Path) -> None:
    json_file = tmp_path / "services.json"
    json_file.write_text(json.dumps({"orders": ["h:1", {"address": "h:2", "weight": 2}]}))
    registry = StaticRegistry.from_file(json_file)
    assert addresses(registry, "orders") == ["h:1", "h:2"]
    assert registry.resolve("orders")[1].weight == 2.0

    toml_file = tmp_path / "services.toml"
    toml_file.write_text(
        'orders = ["h:1"]\n\n[[payments]]\nhost = "::1"\nport = 9000\nzone = "eu-1a"\n'
    )
    registry = StaticRegistry.from_file(toml_file)
    assert addresses(registry, "orders") == ["h:1"]
    assert registry.resolve("payments")[0].zone == "eu-1a"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", "{not json", "is malformed"),
        ("bad.toml", "orders = [", "is malformed"),
        ("list.json", '["h:1"]', "must hold an object"),
        ("port.json", '{"orders": ["h:99999"]}', "out of range"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message) as caught:
        StaticRegistry.from_file(path)
    if "malformed" in message or "object" in message:
        assert name in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read static registry file"):
        StaticRegistry.from_file(tmp_path / "nope.json")


def wait_for(condition: object, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def rewrite(path: Path, services: dict[str, list[str]], bump: float) -> None:
    """Replace the file the way deployment tools do: write aside, then rename over it."""
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(services))
    stamp = path.stat().st_mtime + bump  # coarse file-system clocks must still see a change
    os.utime(staged, (stamp, stamp))
    os.replace(staged, path)


def test_reload_interval_follows_edits_and_stops_on_close(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"orders": ["127.0.0.1:1"]}))
    lb = lbclient.LoadBalancer(StaticRegistry.from_file(path, reload_interval=0.02))

    def ports() -> set[int]:
        return {int(row["address"].rsplit(":", 1)[1]) for row in lb.stats("orders")["instances"]}

    with lb.pick("orders") as handle:
        assert handle.instance.port == 1
    rewrite(path, {"orders": ["127.0.0.1:2", "127.0.0.1:3"]}, 1)
    wait_for(lambda: ports() == {2, 3})
    assert {lb.pick("orders").instance.port for _ in range(10)} == {2, 3}

    # A broken edit keeps the last good list, visibly; fixing the file recovers.
    rewrite(path, {"orders": ["127.0.0.1:0"]}, 2)
    wait_for(lambda: lb.stats("orders")["registry_error"] is not None)
    assert ports() == {2, 3}
    rewrite(path, {"orders": ["127.0.0.1:4"]}, 3)
    wait_for(lambda: ports() == {4})  # a fixed file is read again at the reload pace (>= 1 s)
    assert lb.stats("orders")["registry_error"] is None
    lb.close()
    watchers = [t for t in threading.enumerate() if t.name.startswith("lbclient-watch-")]
    assert watchers == []


def test_from_uri_query_and_path(tmp_path: Path) -> None:
    registry = registry_from_uri("static://?orders=h:1,h:2&payments=%5B::1%5D:3")
    assert addresses(registry, "orders") == ["h:1", "h:2"]
    assert addresses(registry, "payments") == ["[::1]:3"]

    path = tmp_path / "my services.json"
    path.write_text(json.dumps({"orders": ["h:7"]}))
    registry = registry_from_uri("static://" + str(path).replace(" ", "%20"))
    assert addresses(registry, "orders") == ["h:7"]


def test_load_balancer_accepts_a_uri() -> None:
    with lbclient.LoadBalancer("static://?orders=127.0.0.1:9") as lb:
        assert lb.pick("orders").instance.port == 9


def test_static_is_registered_through_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="lbclient.registries")}
    assert names["static"] == "lbclient.registry.static:StaticRegistry"
    assert registry_class("static") is StaticRegistry
    assert "static" in available_schemes()


def test_unknown_scheme_names_the_choices() -> None:
    with pytest.raises(ConfigurationError, match=r"no registry for scheme 'zookeeper'.*static"):
        registry_from_uri("zookeeper://127.0.0.1:2181")
    with pytest.raises(ConfigurationError, match="has no scheme"):
        registry_from_uri("127.0.0.1:8500")


PLUGIN = '''
from lbclient import Registry, ServiceInstance

class MemoryRegistry(Registry):
    """A third-party registry, found only through its entry point."""

    scheme = "memory"

    def __init__(self, host):
        self.host = host

    def resolve(self, service):
        return [ServiceInstance(service, self.host, 80)]

    @classmethod
    def from_uri(cls, uri):
        return cls(uri.hostname)
'''


def test_a_plugin_registry_is_found_by_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real (if tiny) installed distribution: a module plus a dist-info with entry points.
    (tmp_path / "lbclient_memory_plugin.py").write_text(PLUGIN)
    info = tmp_path / "lbclient_memory_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lbclient-memory-plugin\n")
    (info / "entry_points.txt").write_text(
        "[lbclient.registries]\nmemory = lbclient_memory_plugin:MemoryRegistry\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "memory" in available_schemes()
    registry = registry_from_uri("memory://10.1.2.3")
    assert type(registry).__name__ == "MemoryRegistry"
    assert addresses(registry, "orders") == ["10.1.2.3:80"]
