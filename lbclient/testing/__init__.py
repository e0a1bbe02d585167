"""Real servers for tests and demos: HTTP backends and protocol-faithful Consul and Kubernetes
API test servers, so you can test your own services without a cluster."""

from lbclient.testing._blackhole import BlackHole
from lbclient.testing._http import BackendProcess, BackendSpec, HTTPBackend, free_port
from lbclient.testing._process import ControlledBackend
from lbclient.testing.kubernetes import KubernetesTestServer

__all__ = [
    "BackendProcess",
    "BackendSpec",
    "BlackHole",
    "ConsulTestServer",
    "ControlledBackend",
    "HTTPBackend",
    "KubernetesTestServer",
    "free_port",
]


def __getattr__(name: str) -> object:
    # Imported on first use: the Consul test server lives beside the [consul] extra.
    if name == "ConsulTestServer":
        from lbclient.testing.consul import ConsulTestServer

        return ConsulTestServer
    raise AttributeError(f"module 'lbclient.testing' has no attribute {name!r}")
