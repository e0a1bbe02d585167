"""``lbclient demo`` end to end, with small numbers: real backends in a child process."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from lbclient import available_schedulers
from lbclient._demo import BACKENDS, run_demo
from lbclient.cli import main


def lbclient_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lbclient", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_command_prints_a_table_per_scheduler() -> None:
    done = lbclient_command(
        "demo", "--requests", "60", "--concurrency", "4", "--schedulers", "round_robin,random",
        "--plain",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Starting 5 HTTP backends on loopback" in out
    assert "round_robin: 30/60 requests" in out  # progress
    for backend in BACKENDS:
        assert out.count(backend.spec.name) >= 3  # listed at start and in both tables
    assert out.count("backend  behaviour") == 2
    assert "p50 ms  p99 ms" in out
    assert out.count("60 requests in") == 2
    assert "All schedulers" in out
    assert done.stderr == ""


def test_demo_with_rich_output() -> None:
    out = io.StringIO()
    results = run_demo(requests=40, concurrency=8, schedulers=["least_request"], out=out)
    (result,) = results
    assert result.scheduler == "least_request"
    assert result.requests == 40
    assert result.errors == 0  # the flaky backend's 503s were retried elsewhere
    assert result.attempts >= 40
    assert sum(row.failures for row in result.rows) == result.attempts - 40
    text = out.getvalue()
    assert "least_request" in text
    assert "┃ backend" in text  # drawn by rich
    assert "flaky" in text


def test_default_schedulers_are_those_available() -> None:
    out = io.StringIO()
    results = run_demo(requests=10, concurrency=2, plain=True, out=out)
    names = [r.scheduler for r in results]
    assert names
    assert set(names) <= set(available_schedulers())
    assert "round_robin" in names


def test_schedulers_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedulers"]) == 0
    assert "round_robin" in capsys.readouterr().out.split()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--schedulers", "fastest"], "unknown scheduler(s) fastest; choose from:"),
        (["demo", "--requests", "0"], "must be at least 1"),
        (["demo", "--concurrency", "many"], "expected a whole number"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err
