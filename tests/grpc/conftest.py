"""Fixtures for the gRPC tests: code generated from protos/ at test time, real servers.

tests/grpc has no ``__init__.py`` on purpose: as a package it would be named ``grpc`` and
shadow grpcio. Helper modules here therefore carry unique names (``lbgrpc_support``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from lbgrpc_support import EchoBackend

import lbclient

PROTOS = Path(__file__).parent / "protos"


@pytest.fixture(scope="session")
def echo(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """``echo.pb2`` and ``echo.pb2_grpc``, generated from lbtest_echo.proto with grpcio-tools."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("generated")
    status = protoc.main(
        ["protoc", f"-I{PROTOS}", f"--python_out={out}", f"--grpc_python_out={out}",
         str(PROTOS / "lbtest_echo.proto")]
    )  # fmt: skip
    assert status == 0, "protoc failed on lbtest_echo.proto"
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("lbtest_echo_pb2")
        pb2_grpc = importlib.import_module("lbtest_echo_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return SimpleNamespace(pb2=pb2, pb2_grpc=pb2_grpc)


@pytest.fixture
def backends(echo: SimpleNamespace) -> Iterator[list[EchoBackend]]:
    """Three running Echo servers on loopback, named a, b, c."""
    started = [EchoBackend(name, echo).start() for name in "abc"]
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture
def make_lb() -> Iterator[object]:
    """``make_lb(backends, **settings)``: a LoadBalancer over those backends, closed afterwards."""
    made: list[lbclient.LoadBalancer] = []

    def make(backends: list[EchoBackend], **settings: object) -> lbclient.LoadBalancer:
        lb = lbclient.LoadBalancer(
            {"echo": [{"address": b.address, "id": b.name} for b in backends]}, **settings
        )
        made.append(lb)
        return lb

    yield make
    for lb in made:
        lb.close()
