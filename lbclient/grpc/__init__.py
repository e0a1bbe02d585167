"""gRPC: load-balanced channels for grpcio (``lbclient.grpc``) and grpc.aio (``lbclient.grpc.aio``).

>>> import grpc, lbclient, lbclient.grpc
>>> lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:50051", "127.0.0.1:50052"]})
>>> channel = lbclient.grpc.insecure_channel("orders", lb)
>>> channel = grpc.intercept_channel(channel)        # your interceptors compose as usual
>>> # OrdersStub(channel).Get(request)               -- each call picks an instance
>>> channel.close(); lb.close()

grpcio lets no Python code plug in a balancing policy or a resolver, and a client
interceptor cannot send a call to another channel. The channel is the extension point: it
receives each method's serializers, so it can hand every call to the sub-channel of the
instance the balancer picked. Which to use when: see ``LoadBalancingInterceptor``.
"""

from lbclient._exceptions import MissingDependency

try:
    import grpc as _grpc  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency("lbclient.grpc", "grpc") from _exc

from lbclient.grpc import aio
from lbclient.grpc._core import DEFAULT_KEY_METADATA, failure_for_code, key_from_metadata
from lbclient.grpc._errors import (
    CircuitOpenAioRpcError,
    CircuitOpenRpcError,
    NoInstanceAioRpcError,
    NoInstanceRpcError,
    OverloadedAioRpcError,
    OverloadedRpcError,
)
from lbclient.grpc._interceptor import LoadBalancingInterceptor
from lbclient.grpc._sync import LoadBalancedChannel, insecure_channel, secure_channel

__all__ = [
    "DEFAULT_KEY_METADATA",
    "CircuitOpenAioRpcError",
    "CircuitOpenRpcError",
    "LoadBalancedChannel",
    "LoadBalancingInterceptor",
    "NoInstanceAioRpcError",
    "NoInstanceRpcError",
    "OverloadedAioRpcError",
    "OverloadedRpcError",
    "aio",
    "failure_for_code",
    "insecure_channel",
    "key_from_metadata",
    "secure_channel",
]
