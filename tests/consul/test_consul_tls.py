"""ConsulRegistry and ConsulRegistrar over HTTPS: the CA given by argument or CONSUL_* variables."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from consul_helpers import register

import lbclient
from lbclient.consul import ConsulRegistrar, ConsulRegistry
from lbclient.testing.consul import ConsulTestServer


@pytest.fixture(scope="module")
def certificate(self_signed: Callable[..., tuple[Path, Path]]) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, its own CA."""
    return self_signed("consul", "IP:127.0.0.1")


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[ConsulTestServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    with ConsulTestServer(ssl_context=context) as server:
        yield server


def test_https_with_a_ca_file_sync_async_and_from_the_environment(tls_server, certificate):
    ca = str(certificate[0])
    assert tls_server.url.startswith("https://")
    with ConsulRegistrar("orders", 8001, service_id="o1", address="127.0.0.1",
                         consul_port=tls_server.port, scheme="https", verify=ca,
                         handle_sigterm=False):  # fmt: skip
        registry = ConsulRegistry(port=tls_server.port, scheme="https", verify=ca)
        assert [i.port for i in registry.resolve("orders")] == [8001]
        assert [i.port for i in asyncio.run(registry.aresolve("orders"))] == [8001]
        registry.close()
        environ = {
            "CONSUL_HTTP_ADDR": f"127.0.0.1:{tls_server.port}",
            "CONSUL_HTTP_SSL": "true",
            "CONSUL_CACERT": ca,
        }
        from_env = ConsulRegistry(environ=environ)
        assert [i.port for i in from_env.resolve("orders")] == [8001]
        from_env.close()


def test_verification_is_on_by_default(tls_server):
    registry = ConsulRegistry(port=tls_server.port, scheme="https")
    with pytest.raises(lbclient.RegistryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        registry.resolve("orders")
    registry.close()


def test_meta_scheme_http_never_downgrades_an_https_request(agent, server, backends):
    """An instance registered with ``Meta.scheme=http`` does not get an ``https://`` request
    (it would carry the Authorization header in clear) unless the caller opts in."""
    register(agent, backends[0], meta={"scheme": "http"})
    lb = lbclient.LoadBalancer(f"consul://127.0.0.1:{server.port}", outlier=None)
    try:
        headers = {"Authorization": "Bearer secret"}
        refused = pytest.raises(lbclient.SchemeDowngradeRefused, match="allow_scheme_downgrade")
        with httpx.Client(transport=lbclient.LoadBalancedTransport(lb)) as client, refused:
            client.get("https://orders/x", headers=headers)
        assert backends[0].requests == 0
        transport = lbclient.LoadBalancedTransport(lb, allow_scheme_downgrade=True)
        with httpx.Client(transport=transport) as client:
            response = client.get("https://orders/x", headers=headers)
        assert response.status_code == 200
        assert response.request.url == "http://orders/x"  # says what really happened
        (row,) = lb.stats("orders")["instances"]
        assert (row["failures"], row["in_flight"]) == (0, 0)
    finally:
        lb.close()
