"""examples/grpc_failover.py runs and shows what it promises."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "grpc_failover.py"


def test_failover_example_loses_no_call():
    main = runpy.run_path(str(EXAMPLE))["main"]
    result = main()
    sync = result["sync (b stopped after 10 calls)"]
    assert sum(sync.values()) == 30
    assert sync["b"] <= 4
    assert set(result["aio"]) == {"a", "c"}
    assert sum(result["aio"].values()) == 20
    assert result["failed attempts, retried elsewhere"]["b"] >= 1
