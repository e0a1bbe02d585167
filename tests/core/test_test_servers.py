"""What every lbclient.testing server owes its users: silence on stderr when clients go away,
its documented knobs as constructor arguments, and no client library needed to import it."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from lbclient.testing import ConsulTestServer, HTTPBackend, KubernetesTestServer


def handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def reset_after_sending(address: tuple[str, int], request: bytes) -> None:
    """Send ``request`` and hang up at once with a TCP reset, before any answer."""
    sock = socket.create_connection(address)
    sock.sendall(request)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_servers_print_nothing_when_clients_disconnect(capfd: pytest.CaptureFixture[str]) -> None:
    baseline = handler_threads()
    get = b"GET /v1/health/service/web HTTP/1.1\r\nHost: x\r\n\r\n"
    with (
        HTTPBackend("a", delay=0.1) as backend,
        ConsulTestServer(delay=0.1) as agent,
        KubernetesTestServer(bookmark_interval=0.05) as api,
    ):
        for server in (backend, agent):
            address = (server.host, server.port)
            reset_after_sending(address, get)  # the answer is written to a reset socket
            reset_after_sending(address, b"GET /half-a-request")  # gone mid-request
            reset_after_sending(address, b"PUT / HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        # A watch stream whose client vanishes: the next bookmark hits the reset socket.
        conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
        path = "/apis/discovery.k8s.io/v1/endpointslices?watch=1&allowWatchBookmarks=1"
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        response.close()  # the last reference to the socket: it is reset now
        conn.close()
        reset_after_sending((api.host, api.port), get)
        wait_for(lambda: api.open_watches == 0)
        wait_for(lambda: handler_threads() == baseline)
    captured = capfd.readouterr()
    assert captured.err == ""


def test_documented_knobs_are_constructor_arguments() -> None:
    with HTTPBackend("b", health_status=503, status=418) as backend:
        conn = http.client.HTTPConnection(backend.host, backend.port, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 503
        conn.close()
        conn = http.client.HTTPConnection(backend.host, backend.port, timeout=10)
        conn.request("GET", "/x")
        assert conn.getresponse().status == 418
        conn.close()
    with ConsulTestServer(delay=0.01, check_update_interval=0) as agent:
        assert (agent.delay, agent.state.check_update_interval) == (0.01, 0)
    with KubernetesTestServer(expired_as_http_410=True, too_large_wait=0.1) as api:
        assert (api.expired_as_http_410, api.too_large_wait) == (True, 0.1)


CHILD = """
import sys, urllib.request
for name in ("consul", "aiohttp", "kubernetes", "grpc"):  # httpx is a core dependency
    sys.modules[name] = None  # importing any of them now fails
from lbclient.testing import ConsulTestServer, KubernetesTestServer
with ConsulTestServer() as agent, KubernetesTestServer() as api:
    for url in (agent.url + "/v1/catalog/services", api.url + "/api/v1/endpoints"):
        print(urllib.request.urlopen(url).status)
"""


def test_test_servers_need_no_client_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.split() == ["200", "200"]


def test_http_backend_answers_head_without_a_body() -> None:
    with HTTPBackend("h") as backend:
        conn = http.client.HTTPConnection(backend.host, backend.port, timeout=10)
        conn.request("HEAD", "/x")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"")
        conn.request("GET", "/x")  # the kept-alive connection is still in step
        assert json.loads(conn.getresponse().read())["method"] == "GET"
        conn.close()
