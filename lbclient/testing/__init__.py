"""Real servers for tests and demos: HTTP backends (and, with the extras, Consul and Kubernetes
API test servers), so you can test your own services without a cluster."""

from lbclient.testing._http import BackendProcess, BackendSpec, HTTPBackend, free_port

__all__ = ["BackendProcess", "BackendSpec", "HTTPBackend", "free_port"]
