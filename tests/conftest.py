"""Fixtures shared by every test directory."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SelfSigned = Callable[..., tuple[Path, Path]]


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    """Make a self-signed certificate (its own CA): ``self_signed("orders", "DNS:orders",
    "IP:127.0.0.1") -> (cert.pem, key.pem)``, with openssl as any TLS server would use it."""

    def make(common_name: str, *alt_names: str) -> tuple[Path, Path]:
        directory = tmp_path_factory.mktemp("tls")
        cert, key = directory / "cert.pem", directory / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", f"/CN={common_name}", "-keyout", str(key),
             "-out", str(cert), "-addext", f"subjectAltName={','.join(alt_names)}"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return cert, key

    return make


@pytest.fixture
def otel() -> Iterator[Any]:
    """An OpenTelemetry SDK with in-memory span and metric exporters, and lbclient's
    instrumentation on it (see ``otel_memory.InMemoryOtel``)."""
    from otel_memory import InMemoryOtel

    sdk = InMemoryOtel()
    yield sdk
    sdk.shutdown()
