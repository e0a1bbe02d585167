"""AsyncLoadBalancedTransport: the httpx transport for ``httpx.AsyncClient``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Unpack

import anyio
import httpx

from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._exceptions import ServiceNotFound
from lbclient._handle import PickHandle
from lbclient._hedge import Hedging
from lbclient._limits import aadmit
from lbclient._racing import Race, on_asyncio, race_tasks
from lbclient._retry import RetryState
from lbclient.transport._core import (
    Release,
    RetryAttempt,
    TransportCore,
    abandon,
    attempt_end,
)
from lbclient.transport._options import TransportOptions, checked
from lbclient.transport._pools import InnerTransports


class AsyncLoadBalancedTransport(httpx.AsyncBaseTransport):
    """The asyncio twin of LoadBalancedTransport; same options, same behaviour.

    >>> client = httpx.AsyncClient(transport=AsyncLoadBalancedTransport(lb))  # doctest: +SKIP
    >>> await client.get("http://orders/api/items")                           # doctest: +SKIP
    """

    def __init__(
        self,
        lb: LoadBalancer,
        transport: httpx.AsyncBaseTransport | Callable[[], httpx.AsyncBaseTransport] | None = None,
        **options: Unpack[TransportOptions],
    ) -> None:
        self._core = TransportCore(lb, **checked(lb, options))
        self._inners = InnerTransports(
            transport, httpx.AsyncBaseTransport, httpx.AsyncHTTPTransport
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()  # a first resolution counts against the deadline
        try:
            state = await self._core.lb.aservice(request.url.host)
        except ServiceNotFound:
            if self._core.passthrough:
                return await self._inners.for_request(request).handle_async_request(request)
            raise
        retry = self._core.start(request, state, started)
        ticket = None if state.gate is None else await aadmit(state.gate, retry, retry.deadline)
        hedging = self._core.hedging(state, retry)
        try:
            while True:
                try:
                    if hedging is None:
                        handle = self._core.pick(request, state, retry)
                        return await self._attempt(request, handle, retry, None)
                    return await self._race(request, state, retry, hedging)
                except RetryAttempt as signal:
                    await anyio.sleep(signal.pause)
        finally:
            if ticket is not None:  # the returned response's handle keeps it until closed
                ticket.drop()

    async def _race(
        self, request: httpx.Request, state: ServiceState, retry: RetryState, hedging: Hedging
    ) -> httpx.Response:
        """One round of a hedged request: its attempts race in tasks (``race_tasks``)."""
        race = Race(hedging)
        handle = self._core.pick(request, state, retry)
        if not race.hedged or not on_asyncio():  # no delay known yet: one attempt
            response = await self._attempt(request, handle, retry, race)
            race.record(handle.started)
            return response
        answer, failure = await race_tasks(
            race,
            state,
            retry,
            handle,
            lambda attempt: self._attempt(request, attempt, retry, race),
            _discard,
        )
        if answer is None:
            assert failure is not None
            raise failure
        return answer

    async def _attempt(
        self, request: httpx.Request, handle: PickHandle, retry: RetryState, race: Race | None
    ) -> httpx.Response:
        try:
            prepared = self._core.attempt(request, handle, retry)
            inner = self._inners.for_request(prepared)
            end = attempt_end(prepared)
            if end is None:
                response = await inner.handle_async_request(prepared)
            else:  # cut at the end even if the server trickles bytes (httpx's waits are capped)
                with anyio.move_on_after(end - time.monotonic()) as scope:
                    response = await inner.handle_async_request(prepared)
                if scope.cancelled_caught:
                    raise httpx.ReadTimeout("lbclient: attempt timed out", request=prepared)
        except httpx.TransportError as exc:
            if race is not None and race.decided:  # a lost hedge: not the instance's fault
                handle.cancel()
                raise
            signal = self._core.on_error(request, handle, retry, exc)
            if signal is None:
                raise
            raise signal from exc
        except BaseException as exc:
            abandon(handle, exc)
            raise
        pause = self._core.on_response(handle, retry, response)
        if pause is not None:
            await response.aclose()
            raise RetryAttempt(pause)
        # Hand back the inner response itself, its body wrapped to release the handle on
        # close: cheaper than building a new Response (which copies every header).
        response.stream = _ReleasingStream(response.stream, handle, response.status_code)
        response.request = self._core.as_sent(request, prepared)
        return response

    async def aclose(self) -> None:
        for inner in self._inners.all():
            await inner.aclose()


async def _discard(handle: PickHandle, response: httpx.Response) -> None:
    """A losing answer (its handle already released): its connection goes back."""
    await response.aclose()


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
            self.handle.done(self.failure, status=self.status)
