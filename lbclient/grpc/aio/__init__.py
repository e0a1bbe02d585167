"""grpc.aio twins of ``lbclient.grpc``: ``insecure_channel``, ``secure_channel``::

channel = lbclient.grpc.aio.insecure_channel("orders", lb, interceptors=[auth])
reply = await OrdersStub(channel).Get(request)
"""

from lbclient.grpc.aio._channel import LoadBalancedAioChannel, insecure_channel, secure_channel
from lbclient.grpc.aio._interceptor import load_balancing_interceptors

__all__ = [
    "LoadBalancedAioChannel",
    "insecure_channel",
    "load_balancing_interceptors",
    "secure_channel",
]
