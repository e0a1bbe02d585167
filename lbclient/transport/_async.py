"""AsyncLoadBalancedTransport: the httpx transport for ``httpx.AsyncClient``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Unpack

import httpx
from tenacity import AsyncRetrying

from lbclient import _validate as check
from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._exceptions import ServiceNotFound
from lbclient._retry import RetryState
from lbclient.transport._core import Release, RetryAttempt, TransportCore, abandon
from lbclient.transport._options import TransportOptions, checked


class AsyncLoadBalancedTransport(httpx.AsyncBaseTransport):
    """The asyncio twin of LoadBalancedTransport; same options, same behaviour.

    >>> client = httpx.AsyncClient(transport=AsyncLoadBalancedTransport(lb))  # doctest: +SKIP
    >>> await client.get("http://orders/api/items")                           # doctest: +SKIP
    """

    def __init__(
        self,
        lb: LoadBalancer,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Unpack[TransportOptions],
    ) -> None:
        self._core = TransportCore(lb, **checked(lb, options))
        if transport is not None:
            check.instance_of(
                "transport", transport, httpx.AsyncBaseTransport, "httpx.AsyncHTTPTransport()"
            )
        self._inner = transport or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            state = await self._core.lb.aservice(request.url.host)
        except ServiceNotFound:
            if self._core.passthrough:
                return await self._inner.handle_async_request(request)
            raise
        retry = self._core.start(request, state)
        # The first attempt runs outside tenacity: most requests succeed at once, and a
        # tenacity loop costs more than the rest of the balancing put together.
        try:
            return await self._attempt(request, state, retry)
        except RetryAttempt:
            pass
        replay = True
        async for attempt in AsyncRetrying(**self._core.retrying(retry)):
            with attempt:
                if replay:  # let tenacity count the first attempt and wait as it would have
                    replay = False
                    raise RetryAttempt()
                return await self._attempt(request, state, retry)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, request: httpx.Request, state: ServiceState, retry: RetryState
    ) -> httpx.Response:
        handle = self._core.pick(state, retry)
        try:
            response = await self._inner.handle_async_request(self._core.prepare(request, handle))
        except httpx.TransportError as exc:
            signal = self._core.on_error(handle, retry, exc)
            if signal is None:
                raise
            raise signal from exc
        except BaseException as exc:
            abandon(handle, exc)
            raise
        if self._core.on_response(handle, retry, response.status_code):
            await response.aclose()
            raise RetryAttempt()
        # Hand back the inner response itself, its body wrapped to release the handle on
        # close: cheaper than building a new Response (which copies every header).
        response.stream = _ReleasingStream(response.stream, handle, response.status_code)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _ReleasingStream(Release, httpx.AsyncByteStream):
    """The inner response body; closing it completes the attempt's handle."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except BaseException as exc:
            self.broken(exc)
            raise

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self.release()
