"""Finding the cluster as ``kubernetes`` does: kubeconfig first, then in-cluster.

The async driver needs a ``kubernetes.aio`` Configuration; it is derived from the sync one,
token refresh hook included, so there is one source of truth and one discovery path.
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import Any

from lbclient._exceptions import ConfigurationError

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

_COPIED = (
    "host",
    "ssl_ca_cert",
    "cert_file",
    "key_file",
    "verify_ssl",
    "assert_hostname",
    "tls_server_name",
    "proxy",
    "refresh_api_key_hook",
)


def load_configuration(context: str | None = None, config_file: str | None = None) -> Any:
    """A ``kubernetes.client.Configuration`` for this process, or ConfigurationError."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    load_kube_config: Any = config.load_kube_config  # untyped in the client
    load_incluster_config: Any = config.load_incluster_config
    configuration = client.Configuration()
    kubeconfig = config_file or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    default = Path(os.path.expanduser("~/.kube/config"))
    try:
        if kubeconfig or default.exists() or context:
            load_kube_config(
                config_file=kubeconfig or None,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            load_incluster_config(client_configuration=configuration)
    except (ConfigException, OSError) as exc:
        raise ConfigurationError(
            "no usable Kubernetes configuration: no kubeconfig ($KUBECONFIG or ~/.kube/config) "
            f"and not running in a pod ({exc}); pass configuration=kubernetes.client."
            "Configuration(host=...) or run inside the cluster"
        ) from exc
    return configuration


def default_namespace() -> str:
    """The pod's own namespace when in a cluster, else ``default``."""
    try:
        return NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


@functools.cache
def aio_available() -> bool:
    """True when the installed ``kubernetes`` ships ``kubernetes.aio`` (37.x and later)."""
    try:
        importlib.import_module("kubernetes.aio.client")
    except ImportError:
        return False
    return True


def aio_configuration(configuration: Any) -> Any:
    """The ``kubernetes.aio`` twin of a sync Configuration (host, TLS, credentials, refresh)."""
    from kubernetes.aio import client as aio_client

    twin = aio_client.Configuration()
    for name in _COPIED:
        if hasattr(configuration, name):
            setattr(twin, name, getattr(configuration, name))
    twin.api_key = dict(configuration.api_key)
    twin.api_key_prefix = dict(configuration.api_key_prefix)
    return twin


def host_of(configuration: Any) -> str:
    return str(getattr(configuration, "host", "?"))
