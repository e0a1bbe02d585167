"""grpc.aio interceptors that balance calls through a LoadBalancedAioChannel.

See ``lbclient.grpc._interceptor`` for what an interceptor can and cannot do and which form
to use when. grpc.aio files each interceptor object under the first call kind it implements,
so ``load_balancing_interceptors`` returns one object per kind. Unary calls keep the aio
channel's retries: the interceptor returns the channel's own call object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc.aio

from lbclient.grpc._interceptor import MethodRoutes, call_options
from lbclient.grpc.aio._channel import LoadBalancedAioChannel

if TYPE_CHECKING:  # generic in grpc-stubs, plain classes at run time
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor
    _StreamStream = grpc.aio.StreamStreamClientInterceptor


class _Routing:
    def __init__(self, routes: MethodRoutes) -> None:
        self._routes = routes

    def _route(self, kind: str, continuation: Any, details: Any, request: Any) -> Any:
        unary = kind.startswith("unary")
        route = self._routes.get(kind, details.method, request if unary else None)
        if route is None:
            return None
        options = call_options(details)
        options.pop("compression")  # grpc.aio's ClientCallDetails carries none
        return route(request, **options)


class UnaryUnaryBalancer(_Routing, _UnaryUnary):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = self._route("unary_unary", continuation, details, request)
        return call if call is not None else await continuation(details, request)


class UnaryStreamBalancer(_Routing, _UnaryStream):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        call = self._route("unary_stream", continuation, details, request)
        return call if call is not None else await continuation(details, request)


class StreamUnaryBalancer(_Routing, _StreamUnary):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        call = self._route("stream_unary", continuation, details, requests)
        return call if call is not None else await continuation(details, requests)


class StreamStreamBalancer(_Routing, _StreamStream):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        call = self._route("stream_stream", continuation, details, requests)
        return call if call is not None else await continuation(details, requests)


def load_balancing_interceptors(channel: LoadBalancedAioChannel) -> list[Any]:
    """Interceptors (one per call kind) sending protobuf calls through ``channel``.

    >>> lb_channel = lbclient.grpc.aio.insecure_channel("orders", lb)          # doctest: +SKIP
    >>> host = grpc.aio.insecure_channel("unused:1",                           # doctest: +SKIP
    ...                                  interceptors=load_balancing_interceptors(lb_channel))
    """
    routes = MethodRoutes(channel)
    return [
        UnaryUnaryBalancer(routes),
        UnaryStreamBalancer(routes),
        StreamUnaryBalancer(routes),
        StreamStreamBalancer(routes),
    ]
