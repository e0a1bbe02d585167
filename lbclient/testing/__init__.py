"""Real servers for tests and demos: HTTP backends and protocol-faithful Consul and Kubernetes
API test servers, so you can test your own services without a cluster."""

from lbclient.testing._http import BackendProcess, BackendSpec, HTTPBackend, free_port
from lbclient.testing.kubernetes import KubernetesTestServer

__all__ = ["BackendProcess", "BackendSpec", "HTTPBackend", "KubernetesTestServer", "free_port"]
