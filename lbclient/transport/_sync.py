"""LoadBalancedTransport: the httpx transport for ``httpx.Client``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Unpack

import httpx
from tenacity import Retrying

from lbclient import _validate as check
from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._exceptions import ServiceNotFound
from lbclient._retry import RetryState
from lbclient.transport._core import Release, RetryAttempt, TransportCore, abandon
from lbclient.transport._options import TransportOptions, checked


class LoadBalancedTransport(httpx.BaseTransport):
    """Send ``http://<service>/...`` to an instance of ``<service>`` picked by ``lb``.

    >>> lb = LoadBalancer({"orders": ["127.0.0.1:8001", "127.0.0.1:8002"]})  # doctest: +SKIP
    >>> client = httpx.Client(transport=LoadBalancedTransport(lb))           # doctest: +SKIP
    >>> client.get("http://orders/api/items")                               # doctest: +SKIP

    ``transport`` is the inner transport that really sends (default: ``httpx.HTTPTransport()``,
    whose connection pool is shared by all instances). Keyword options (see README):
    ``retry`` (a RetryPolicy; default: the service's), ``key`` (hash-key source; default
    ``extensions["lb_key"]``), ``unknown_service`` (``"raise"`` or ``"passthrough"``),
    ``host_header`` and ``tls_server_name`` (``"instance"``, ``"service"`` or a literal name).
    """

    def __init__(
        self,
        lb: LoadBalancer,
        transport: httpx.BaseTransport | None = None,
        **options: Unpack[TransportOptions],
    ) -> None:
        self._core = TransportCore(lb, **checked(lb, options))
        if transport is not None:
            check.instance_of("transport", transport, httpx.BaseTransport, "httpx.HTTPTransport()")
        self._inner = transport or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            state = self._core.lb.service(request.url.host)
        except ServiceNotFound:
            if self._core.passthrough:
                return self._inner.handle_request(request)
            raise
        retry = self._core.start(request, state)
        # The first attempt runs outside tenacity: most requests succeed at once, and a
        # tenacity loop costs more than the rest of the balancing put together.
        try:
            return self._attempt(request, state, retry)
        except RetryAttempt:
            pass
        replay = True
        for attempt in Retrying(**self._core.retrying(retry)):
            with attempt:
                if replay:  # let tenacity count the first attempt and wait as it would have
                    replay = False
                    raise RetryAttempt()
                return self._attempt(request, state, retry)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, request: httpx.Request, state: ServiceState, retry: RetryState
    ) -> httpx.Response:
        handle = self._core.pick(state, retry)
        try:
            response = self._inner.handle_request(self._core.prepare(request, handle))
        except httpx.TransportError as exc:
            signal = self._core.on_error(handle, retry, exc)
            if signal is None:
                raise
            raise signal from exc
        except BaseException as exc:
            abandon(handle, exc)
            raise
        if self._core.on_response(handle, retry, response.status_code):
            response.close()
            raise RetryAttempt()
        # Hand back the inner response itself, its body wrapped to release the handle on
        # close: cheaper than building a new Response (which copies every header).
        response.stream = _ReleasingStream(response.stream, handle, response.status_code)
        response.request = request
        return response

    def close(self) -> None:
        self._inner.close()


class _ReleasingStream(Release, httpx.SyncByteStream):
    """The inner response body; closing it completes the attempt's handle."""

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except BaseException as exc:
            self.broken(exc)
            raise

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self.release()
