"""LoadBalancedTransport: the httpx transport for ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Unpack

import httpx

from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._exceptions import ServiceNotFound
from lbclient._handle import PickHandle
from lbclient._hedge import Hedging
from lbclient._limits import admit
from lbclient._racing import Attempt, Race, failure_of, race_futures
from lbclient._retry import RetryState
from lbclient.transport._core import Release, RetryAttempt, TransportCore, abandon
from lbclient.transport._options import TransportOptions, checked
from lbclient.transport._pools import InnerTransports
from lbclient.transport._threads import DEFAULT_HEDGE_THREADS, AttemptThreads


class LoadBalancedTransport(httpx.BaseTransport):
    """Send ``http://<service>/...`` to an instance of ``<service>`` picked by ``lb``.

    >>> lb = LoadBalancer({"orders": ["127.0.0.1:8001", "127.0.0.1:8002"]})  # doctest: +SKIP
    >>> client = httpx.Client(transport=LoadBalancedTransport(lb))           # doctest: +SKIP
    >>> client.get("http://orders/api/items")                               # doctest: +SKIP

    ``transport`` is the inner transport that really sends, or a zero-argument callable that
    makes one (default: ``httpx.HTTPTransport``); one connection pool never serves two TLS
    server names, so a callable is called once per name (see README). Keyword options
    (see README): ``retry`` (a RetryPolicy; default: the service's), ``key`` (hash-key source;
    default ``extensions["lb_key"]``), ``unknown_service`` (``"raise"`` or
    ``"passthrough"``), ``host_header`` and ``tls_server_name`` (``"instance"``,
    ``"service"`` or a literal name), ``allow_scheme_downgrade`` (send an ``https://``
    request in clear to an instance the registry lists as ``http``; default False: refused),
    ``hedge`` (a HedgePolicy; default: the service's) and ``hedge_threads`` (the bounded pool
    hedged attempts run on, default 32; when it is busy a request goes unhedged).
    Per request: ``extensions={"lb_key": ..., "lb_timeout": seconds}``.
    """

    def __init__(
        self,
        lb: LoadBalancer,
        transport: httpx.BaseTransport | Callable[[], httpx.BaseTransport] | None = None,
        *,
        hedge_threads: int = DEFAULT_HEDGE_THREADS,
        **options: Unpack[TransportOptions],
    ) -> None:
        self._core = TransportCore(lb, **checked(lb, options))
        self._threads = AttemptThreads(hedge_threads)
        self._inners = InnerTransports(transport, httpx.BaseTransport, httpx.HTTPTransport)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()  # a first resolution counts against the deadline
        try:
            state = self._core.lb.service(request.url.host)
        except ServiceNotFound:
            if self._core.passthrough:
                return self._inners.for_request(request).handle_request(request)
            raise
        retry = self._core.start(request, state, started)
        ticket = None if state.gate is None else admit(state.gate, retry, retry.deadline)
        hedging = self._core.hedging(state, retry)
        try:
            while True:
                try:
                    if hedging is None:
                        handle = self._core.pick(request, state, retry)
                        return self._attempt(request, handle, retry, None)
                    return self._race(request, state, retry, hedging)
                except RetryAttempt as signal:
                    time.sleep(signal.pause)
        finally:
            if ticket is not None:  # the returned response's handle keeps it until closed
                ticket.drop()

    def _race(
        self, request: httpx.Request, state: ServiceState, retry: RetryState, hedging: Hedging
    ) -> httpx.Response:
        """One round of a hedged request: its attempts race on the pool's threads
        (``race_futures``). A losing attempt runs to its end (a blocking read cannot be
        interrupted), then releases its slot as a cancellation and closes its answer."""
        race = Race(hedging)
        handle = self._core.pick(request, state, retry)
        first = (
            self._threads.submit(self._attempt, request, handle, retry, race)
            if race.hedged
            else None
        )
        if first is None:  # no delay known yet, or every thread busy: one attempt, here
            response = self._attempt(request, handle, retry, race)
            race.record(handle.started)
            return response

        def launch(hedge: PickHandle) -> Attempt | None:
            future = self._threads.submit(self._attempt, request, hedge, retry, race)
            if future is None:
                hedge.cancel()
            return future

        winner, failure = race_futures(race, state, retry, (handle, first), launch, _discard)
        if winner is None:
            raise failure_of(failure)
        answer: httpx.Response = winner.result()
        return answer

    def _attempt(
        self, request: httpx.Request, handle: PickHandle, retry: RetryState, race: Race | None
    ) -> httpx.Response:
        try:
            prepared = self._core.attempt(request, handle, retry)
            inner = self._inners.for_request(prepared)
            response = inner.handle_request(prepared)
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
            response.close()
            raise RetryAttempt(pause)
        # Hand back the inner response itself, its body wrapped to release the handle on
        # close: cheaper than building a new Response (which copies every header).
        response.stream = _ReleasingStream(response.stream, handle, response.status_code)
        response.request = self._core.as_sent(request, prepared)
        return response

    def close(self) -> None:
        self._threads.close()
        for inner in self._inners.all():
            inner.close()


def _discard(handle: PickHandle, response: httpx.Response) -> None:
    """A losing answer (its handle already released): its connection goes back."""
    response.close()


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
            self.handle.done(self.failure, status=self.status)
