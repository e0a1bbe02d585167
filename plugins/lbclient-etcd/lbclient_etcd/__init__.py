"""lbclient-etcd: discover instances in etcd v3 and register them there.

>>> import lbclient                                                   # doctest: +SKIP
>>> lb = lbclient.LoadBalancer("etcd://127.0.0.1:2379/services")       # doctest: +SKIP

Instances live under ``<prefix>/<service>/<id>`` as JSON, attached to a lease that
EtcdRegistrar (or AsyncEtcdRegistrar) keeps alive. Installing this package registers the
``etcd`` scheme in the ``lbclient.registries`` entry-point group.
"""

from lbclient_etcd._protocol import decode_instance, encode_instance
from lbclient_etcd._registrar import AsyncEtcdRegistrar, EtcdRegistrar, RegistrarCore
from lbclient_etcd._registry import EtcdRegistry

__all__ = [
    "AsyncEtcdRegistrar",
    "EtcdRegistrar",
    "EtcdRegistry",
    "RegistrarCore",
    "decode_instance",
    "encode_instance",
]
