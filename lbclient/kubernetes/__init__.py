"""Kubernetes discovery: ``KubernetesRegistry`` reads EndpointSlices with list + watch.

Needs the ``kubernetes`` extra: ``pip install 'lbclient[kubernetes]'``.
"""

from lbclient.kubernetes._objects import Port, Selection
from lbclient.kubernetes._registry import KubernetesRegistry

__all__ = ["KubernetesRegistry", "Port", "Selection"]
