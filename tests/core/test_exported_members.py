"""The public surface: everything exported resolves, nothing public is left unexported."""

from __future__ import annotations

import subprocess
import sys
import types

import lbclient


def test_every_exported_name_resolves() -> None:
    for name in lbclient.__all__:
        assert getattr(lbclient, name) is not None, name


def test_public_names_are_all_exported() -> None:
    public = {
        name
        for name, value in vars(lbclient).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(lbclient.__all__) - {"__version__"}


def test_optional_names_load_with_their_extras() -> None:
    for name in lbclient._OPTIONAL:
        assert isinstance(getattr(lbclient, name), type), name


def test_importing_lbclient_needs_no_optional_extra() -> None:
    # (httpx itself imports rich for its own CLI when rich is installed.)
    code = (
        "import sys, lbclient\n"
        "heavy = {'grpc', 'consul', 'kubernetes'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
