"""Fixtures shared by every test directory."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from lbclient._endpoint import Endpoint
from lbclient.schedulers import Scheduler, scheduler_class

SelfSigned = Callable[..., tuple[Path, Path]]
Fragile = Callable[..., type[Scheduler]]

EXPLODE = "explode"
"""Mark an instance (a tag or a metadata value) that a ``fragile_scheduler`` cannot take."""


def _fragile(base: str = "round_robin") -> type[Scheduler]:
    parent: Any = scheduler_class(base)

    class FragileScheduler(parent):  # type: ignore[misc]
        name = f"fragile-{parent.name}"

        def __init__(self, endpoints: Sequence[Endpoint], **options: Any) -> None:
            for endpoint in endpoints:
                instance = endpoint.instance
                if EXPLODE in instance.tags or EXPLODE in instance.metadata.values():
                    raise OverflowError(f"intermediate overflow in fsum ({endpoint.id})")
            super().__init__(endpoints, **options)

    return FragileScheduler


@pytest.fixture(scope="session")
def fragile_scheduler() -> Fragile:
    """``fragile_scheduler(base="round_robin")``: the built-in scheduler ``base``, except that
    it cannot be built over an instance marked ``EXPLODE``, raising OverflowError as wrr, dh
    or ring_hash once did over a Consul ``Weights.Passing`` of 1e308. A user's scheduler, so
    registry answers can be made unusable whatever entries the parsers accept."""
    return _fragile


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
