"""Real servers for tests and demos: HTTP backends and protocol-faithful Consul and Kubernetes
API test servers, so you can test your own services without a cluster.

Standard library and lbclient only: no client library (py-consul, kubernetes) is needed to
run them, only to talk to them the way your code does."""

from lbclient.testing._blackhole import BlackHole
from lbclient.testing._http import BackendProcess, BackendSpec, HTTPBackend, free_port
from lbclient.testing._process import ControlledBackend
from lbclient.testing.consul import ConsulTestServer
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
