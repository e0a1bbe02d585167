"""httpx transports that balance each request over a service's instances."""

from lbclient.transport._async import AsyncLoadBalancedTransport
from lbclient.transport._core import (
    DEFAULT_KEY_EXTENSION,
    KeySource,
    key_from_cookie,
    key_from_extension,
    key_from_header,
)
from lbclient.transport._sync import LoadBalancedTransport

__all__ = [
    "DEFAULT_KEY_EXTENSION",
    "AsyncLoadBalancedTransport",
    "KeySource",
    "LoadBalancedTransport",
    "key_from_cookie",
    "key_from_extension",
    "key_from_header",
]
