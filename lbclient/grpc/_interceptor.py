"""LoadBalancingInterceptor: balancing for code that can only add interceptors to a channel.

An interceptor cannot reroute a call through its continuation: the continuation is bound to
the channel it wraps and never sees the serializers (reference/grpc.md). What it can do is
not call the continuation at all and hand the call to a load-balanced channel instead. The
serializers that takes come from protobuf's default descriptor pool, where every generated
``*_pb2`` module registers its services: ``/pkg.Service/Method`` names the request and
response message classes. Methods the pool does not know (non-protobuf, generic handlers)
go on through the continuation to the channel the interceptor was installed on.

Which to use when:

- ``lbclient.grpc.insecure_channel`` (the channel): whenever you build the channel. Every
  feature, every method, sync retries; your interceptors wrap it with
  ``grpc.intercept_channel`` as usual.
- ``LoadBalancingInterceptor``: when a framework builds the channel and only lets you add
  interceptors. Calls of protobuf methods are balanced with the wrapped load-balanced
  channel's options and credentials (the host channel's target and options are not used
  for them). Sync unary calls made through an interceptor are not retried: grpcio gives the
  interceptor no way to tell a blocking call from ``.future()``, so it starts a future.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import grpc

from lbclient.grpc._sync import LoadBalancedChannel


def message_classes(method: str | bytes) -> tuple[type[Any], type[Any]] | None:
    """Request and response classes of ``/pkg.Service/Method`` from protobuf's default pool."""
    from google.protobuf import descriptor_pool, message_factory

    if isinstance(method, bytes):
        method = method.decode()
    service, _, name = method.lstrip("/").partition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        return None
    if found is None:
        return None
    get = message_factory.GetMessageClass
    return get(found.input_type), get(found.output_type)


class MethodRoutes:
    """Per (kind, method): the load-balanced channel's multicallable, or None to pass through."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._routes: dict[tuple[str, str | bytes], tuple[Any, type[Any]]] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, method: str | bytes, request: Any = None) -> Any:
        """The route of a call; a unary request of another type (raw bytes) passes through."""
        key = (kind, method)
        try:
            route, request_class = self._routes[key]
        except KeyError:
            route, request_class = self._build(kind, method)
        if request is not None and not isinstance(request, request_class):
            return None
        return route

    def _build(self, kind: str, method: str | bytes) -> tuple[Any, type[Any]]:
        classes = message_classes(method)
        route: tuple[Any, type[Any]] = (None, object)
        if classes is not None:
            name = method.decode() if isinstance(method, bytes) else method
            request, response = classes
            make = getattr(self.channel, kind)
            route = (make(name, request.SerializeToString, response.FromString, True), request)
        with self._lock:
            return self._routes.setdefault((kind, method), route)


def call_options(details: Any) -> dict[str, Any]:
    """The per-call arguments carried by ClientCallDetails (older grpcio lacks some)."""
    return {
        "timeout": details.timeout,
        "metadata": details.metadata,
        "credentials": details.credentials,
        "wait_for_ready": getattr(details, "wait_for_ready", None),
        "compression": getattr(details, "compression", None),
    }


if TYPE_CHECKING:  # generic in grpc-stubs, plain classes at run time
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.UnaryStreamClientInterceptor
    _StreamUnary = grpc.StreamUnaryClientInterceptor
    _StreamStream = grpc.StreamStreamClientInterceptor


class LoadBalancingInterceptor(_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream):
    """Send protobuf calls through ``channel`` (a LoadBalancedChannel) instead of the host's.

    >>> lb_channel = lbclient.grpc.insecure_channel("orders", lb)       # doctest: +SKIP
    >>> host = grpc.intercept_channel(framework_channel,                # doctest: +SKIP
    ...                               LoadBalancingInterceptor(lb_channel))
    """

    def __init__(self, channel: LoadBalancedChannel) -> None:
        self.channel = channel
        self._routes = MethodRoutes(channel)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        route = self._routes.get("unary_unary", details.method, request)
        if route is None:
            return continuation(details, request)
        return route.future(request, **call_options(details))

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        route = self._routes.get("unary_stream", details.method, request)
        if route is None:
            return continuation(details, request)
        return route(request, **call_options(details))

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        route = self._routes.get("stream_unary", details.method)
        if route is None:
            return continuation(details, requests)
        return route.future(requests, **call_options(details))

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        route = self._routes.get("stream_stream", details.method)
        if route is None:
            return continuation(details, requests)
        return route(requests, **call_options(details))

    def close(self) -> None:
        """Close the load-balanced channel (the host channel is the framework's)."""
        self.channel.close()
