"""lbclient-dns: discover instances from DNS SRV records or plain A/AAAA names.

>>> import lbclient                                                       # doctest: +SKIP
>>> lb = lbclient.LoadBalancer("dns+srv://_http._tcp.{service}.example")   # doctest: +SKIP
>>> lb = lbclient.LoadBalancer("dns://{service}.shop.svc.cluster.local:8080")  # doctest: +SKIP

Installing this package registers the ``dns+srv`` and ``dns`` schemes in the
``lbclient.registries`` entry-point group.
"""

from lbclient_dns._plan import Query, Reply, Resolution, Srv, addresses_plan, srv_plan
from lbclient_dns._registry import DnsRegistry, DnsRegistryBase, DnsSrvRegistry

__all__ = [
    "DnsRegistry",
    "DnsRegistryBase",
    "DnsSrvRegistry",
    "Query",
    "Reply",
    "Resolution",
    "Srv",
    "addresses_plan",
    "srv_plan",
]
