"""The Kubernetes example runs as a user would run it, and shows scaling and draining."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kubernetes_discovery.py"


def test_the_example_runs_against_the_test_server() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.strip().splitlines())
    assert set(ast.literal_eval(lines["2 pods"])) == {"orders-0", "orders-1"}
    assert set(ast.literal_eval(lines["scaled up to 3"])) == {"orders-0", "orders-1", "orders-2"}
    assert set(ast.literal_eval(lines["orders-0 drains"])) == {"orders-1", "orders-2"}
    assert set(ast.literal_eval(lines["async client"])) == {"orders-1", "orders-2"}
