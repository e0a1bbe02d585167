"""Kubernetes discovery: ``KubernetesRegistry`` reads EndpointSlices with list + watch.

Needs the ``kubernetes`` extra: ``pip install 'lbclient[kubernetes]'``. Layout: ``_objects``
(slices → instances) and ``_listwatch`` (the list/watch state machine) decide without I/O;
``_sync`` (``kubernetes.client``, in a thread) and ``_async`` (``kubernetes.aio``, as a task)
are the two thin I/O edges that drive them.
"""

from lbclient.kubernetes._registry import KubernetesRegistry

__all__ = ["KubernetesRegistry"]
