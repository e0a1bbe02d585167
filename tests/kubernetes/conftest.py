from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
from k8s_support import TOKEN

from lbclient.testing import HTTPBackend
from lbclient.testing.kubernetes import KubernetesTestServer


@pytest.fixture
def api() -> Iterator[KubernetesTestServer]:
    """A Kubernetes API test server requiring a bearer token, with fast bookmarks."""
    with KubernetesTestServer(token=TOKEN, bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def configuration(api: KubernetesTestServer) -> Any:
    """What a user passes to reach the test server through the real ``kubernetes`` client."""
    return kubernetes.client.Configuration(
        host=api.url,
        api_key={"BearerToken": TOKEN},
        api_key_prefix={"BearerToken": "Bearer"},
    )


@pytest.fixture
def backends() -> Iterator[list[HTTPBackend]]:
    """Five real HTTP servers on loopback (a..e), each a 'pod' on its own port."""
    started = [HTTPBackend(name).start() for name in "abcde"]
    yield started
    for backend in started:
        backend.stop()
