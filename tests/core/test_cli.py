"""The ``lbclient`` command: --version, the scheduler listing, a closed pipe, and demo tables
that say what they count."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

import lbclient
from lbclient import available_schedulers
from lbclient._demo import run_demo
from lbclient.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"lbclient {lbclient.__version__}\n"


def test_schedulers_lists_every_name_with_a_description_and_marks_aliases(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schedulers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = dict(line.split(maxsplit=1) for line in lines)
    assert list(rows) == available_schedulers()
    assert rows["rr"] == "alias of round_robin"
    assert rows["mh"] == "alias of maglev"
    assert rows["wrr"] == "alias of weighted_round_robin"
    assert rows["round_robin"].startswith("Rotate through the instances")
    assert rows["least_request"] == (
        "Fewest in-flight among choice_count random picks (weighted: Envoy's dynamic weight)."
    )
    assert all(description.strip() for description in rows.values())
    assert len({line.index(rows[name]) for name, line in zip(rows, lines, strict=True)}) == 1


def test_a_closed_pipe_ends_quietly() -> None:
    """``python -m lbclient schedulers | head -0``: the reader is gone before we write."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lbclient", "schedulers"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # before the child has started writing
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(60) == 1
    assert stderr == ""  # no BrokenPipeError traceback, no "Exception ignored"


def test_demo_tables_count_requests_and_attempts_apart() -> None:
    out = io.StringIO()
    (result,) = run_demo(
        requests=60, concurrency=4, schedulers=["round_robin"], plain=True, out=out
    )
    text = out.getvalue()
    header = next(line for line in text.splitlines() if line.startswith("backend"))
    assert header.split()[:3] == ["backend", "behaviour", "attempts"]
    assert "failed attempts" in header
    assert " requests " not in f" {header} "  # the per-backend column counts attempts
    retries = result.attempts - result.requests
    assert (
        f"60 requests in {result.seconds:.1f}s ({result.rate:.0f}/s) made {result.attempts} "
        f"attempts ({retries} retries on another backend); "
        f"{result.errors} requests failed for the caller;"
    ) in text
    assert sum(row.attempts for row in result.rows) == result.attempts >= 60
