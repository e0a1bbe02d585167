from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbclient.testing import HTTPBackend


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run the test once through LoadBalancedTransport and once through the async twin."""
    return str(request.param)


@pytest.fixture
def backends() -> Iterator[list[HTTPBackend]]:
    """Three real HTTP servers on loopback, named a, b and c."""
    started = [HTTPBackend(name).start() for name in "abc"]
    yield started
    for backend in started:
        backend.stop()
