"""The public API is typed for users: ``mypy --strict`` accepts the README's snippets and the
examples, and rejects each deliberate mistake in ``mistakes.py`` with the expected error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def mypy_output() -> str:
    """One ``mypy --strict`` run over the snippets, the examples and the mistakes (one run:
    mypy's start-up, reading httpx's and grpc's stubs, costs most of the time)."""
    examples = sorted((ROOT / "examples").glob("*.py"))
    assert examples
    files = [HERE / "readme_snippets.py", *examples, HERE / "mistakes.py"]
    # From the root, so ``import lbclient`` finds this source tree and pyproject's settings.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        stdout, stderr, _ = mypy_api.run(
            ["--strict", "--config-file", "pyproject.toml"]
            + [str(path.relative_to(ROOT)) for path in files]
        )
    return stdout + stderr


def errors_in(output: str, name: str) -> set[tuple[int, str]]:
    """``(line, error code)`` of every error mypy reported in the file ``name``."""
    pattern = rf"^(?:.*/)?{re.escape(name)}:(\d+): error: .*\[([a-z-]+)\]$"
    return {(int(m.group(1)), m.group(2)) for m in re.finditer(pattern, output, re.M)}


def test_readme_snippets_and_examples_type_check(mypy_output: str) -> None:
    errors = [e for e in mypy_output.splitlines() if "error:" in e and "mistakes.py" not in e]
    assert not errors, mypy_output


def test_every_deliberate_mistake_is_rejected(mypy_output: str) -> None:
    expected = {
        (number, match.group(1))
        for number, line in enumerate((HERE / "mistakes.py").read_text().splitlines(), start=1)
        if (match := re.search(r"# E: ([a-z-]+)$", line))
    }
    assert len(expected) >= 15
    reported = errors_in(mypy_output, "mistakes.py")
    missing = expected - reported
    assert not missing, (
        f"mypy accepted these mistakes (line, code): {sorted(missing)}\n{mypy_output}"
    )
    unexpected = {n for n, _ in reported} - {n for n, _ in expected}
    assert not unexpected, f"errors on lines not marked as mistakes: {sorted(unexpected)}"
