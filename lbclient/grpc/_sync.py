"""LoadBalancedChannel: a ``grpc.Channel`` that picks an instance for every call.

Stubs and ``grpc.intercept_channel`` take it like any channel. Each call asks the balancer
for an instance and runs on that instance's sub-channel (see ``_pool.py``); its outcome is
reported when it ends. Unary-request calls made with ``__call__``/``with_call`` are retried
on another instance as ``_core.py`` decides, unary-stream calls too until their first
message (``_stream.py``). Request-streaming calls and ``future()`` make one attempt and
return grpcio's own call object untouched.

A ``GrpcHealthCheck`` on the same balancer probes each instance through its sub-channel
(``lend``): the channel registers in ``ServiceState.channels`` once it resolves the service
and leaves on ``close()``, after which the probes use channels of their own again.

Why request streams are not retried: they cannot be replayed. The price: an instance that
dies can fail the client- and bidi-streaming calls that reach it until outlier detection
ejects it (after ``consecutive_local_origin_failure`` = 5 connection failures by default) or
an active health check marks it down; such services should enable one of the two.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, Literal, Unpack

import grpc

from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._exceptions import LBError
from lbclient._handle import PickHandle
from lbclient._hedge import HedgePolicy, Hedging
from lbclient._instance import ServiceInstance
from lbclient._racing import Race, race_futures
from lbclient._retry import RetryPolicy, RetryState
from lbclient.grpc._base import Balancing, Method
from lbclient.grpc._core import (
    DEFAULT_KEY_METADATA,
    NO_DEADLINE,
    ChannelCore,
    Deadline,
    KeyFunction,
    report,
    report_attempt,
)
from lbclient.grpc._errors import FailedCall, rpc_error
from lbclient.grpc._options import BalancingOptions, balancing, check_channel_args
from lbclient.grpc._pool import Lease, SubChannelPool
from lbclient.grpc._stream import RetryingResponseStream

ChannelOptions = Collection[tuple[str, Any]]

if TYPE_CHECKING:  # generic in grpc-stubs, plain classes at run time
    _UnaryUnaryBase = grpc.UnaryUnaryMultiCallable[Any, Any]
    _UnaryStreamBase = grpc.UnaryStreamMultiCallable[Any, Any]
    _StreamUnaryBase = grpc.StreamUnaryMultiCallable[Any, Any]
    _StreamStreamBase = grpc.StreamStreamMultiCallable[Any, Any]
else:
    _UnaryUnaryBase = grpc.UnaryUnaryMultiCallable
    _UnaryStreamBase = grpc.UnaryStreamMultiCallable
    _StreamUnaryBase = grpc.StreamUnaryMultiCallable
    _StreamStreamBase = grpc.StreamStreamMultiCallable


class LoadBalancedChannel(Balancing, grpc.Channel):
    """A channel to every instance of ``service``; build it with ``insecure_channel``."""

    @staticmethod
    def error_class(service: str, cause: LBError) -> Exception:
        return rpc_error(service, cause)

    def __init__(
        self,
        service: str,
        lb: LoadBalancer,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: ChannelOptions | None = None,
        compression: grpc.Compression | None = None,
        key: str | KeyFunction | None = DEFAULT_KEY_METADATA,
        retry: RetryPolicy | None = None,
        idempotent: Collection[str] | Literal["all"] = (),
        hedge: HedgePolicy | None = None,
    ) -> None:
        self._core = ChannelCore(
            lb, service, key=key, retry=retry, idempotent=idempotent, hedge=hedge
        )
        self._options = check_channel_args(credentials, options, compression)
        self._credentials = credentials
        self._compression = compression
        self._pool: SubChannelPool[grpc.Channel] = SubChannelPool(self._subchannel, _close)
        state = lb.services.get(service)
        if state is not None:  # already resolved (its probes may be running): lend at once
            self._core.resolved(state)
            state.channels.add(self)

    def __repr__(self) -> str:
        return f"<LoadBalancedChannel {self._core.service!r} sub-channels={len(self._pool)}>"

    @property
    def service(self) -> str:
        return self._core.service

    @property
    def pool(self) -> SubChannelPool[grpc.Channel]:
        """The per-instance sub-channels (read-only use: addresses, size)."""
        return self._pool

    def _state(self) -> ServiceState:
        state = self._core.state
        if state is None:
            state = super()._state()
            state.channels.add(self)
            if self._pool.closed:  # closed while resolving: close() found nothing to remove
                state.channels.discard(self)
        return state

    def _report_when_done(self, call: Any, handle: PickHandle, lease: Lease[Any]) -> None:
        _report_when_done(call, handle, lease, self._pool)

    @property
    def closed(self) -> bool:
        """True after ``close()`` (ChannelProvider: a lent sub-channel may have been cut)."""
        return self._pool.closed

    @contextlib.contextmanager
    def lend(self, instance: ServiceInstance) -> Iterator[grpc.Channel | None]:
        """The sub-channel of ``instance`` for a health probe, leased until the block ends.

        ``None`` when no call opened one yet (the probe then uses its own channel, and moves
        here once a call has), or when this channel is closed or no longer lists ``instance``.
        """
        lease = self._pool.borrow(instance)
        if lease is None:
            yield None
            return
        try:
            yield lease.channel
        finally:
            self._pool.release(lease)

    def _subchannel(self, instance: ServiceInstance) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(instance.address, self._options, self._compression)
        return grpc.secure_channel(
            instance.address, self._credentials, self._options, self._compression
        )

    # -- grpc.Channel ------------------------------------------------------------------------

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        """Called back once: READY when the service has a usable instance, else TRANSIENT_FAILURE.

        Enough for ``grpc.channel_ready_future``; per-instance connectivity lives in the
        sub-channels and in ``lb.stats()``.
        """
        try:
            ready = self._state().scheduler is not None
        except grpc.RpcError:
            ready = False
        callback(
            grpc.ChannelConnectivity.READY if ready else grpc.ChannelConnectivity.TRANSIENT_FAILURE
        )

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        return None

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.UnaryUnaryMultiCallable[Any, Any]:
        return _UnaryUnary(
            self,
            Method(
                "unary_unary", method, request_serializer, response_deserializer, _registered_method
            ),
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.UnaryStreamMultiCallable[Any, Any]:
        return _UnaryStream(
            self,
            Method(
                "unary_stream",
                method,
                request_serializer,
                response_deserializer,
                _registered_method,
            ),
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.StreamUnaryMultiCallable[Any, Any]:
        return _StreamUnary(
            self,
            Method(
                "stream_unary",
                method,
                request_serializer,
                response_deserializer,
                _registered_method,
            ),
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.StreamStreamMultiCallable[Any, Any]:
        return _StreamStream(
            self,
            Method(
                "stream_stream",
                method,
                request_serializer,
                response_deserializer,
                _registered_method,
            ),
        )

    def close(self) -> None:
        """Close every sub-channel; calls still running end with CANCELLED (as in grpcio)."""
        if self._core.state is not None:
            self._core.state.channels.discard(self)
        for channel in self._pool.close():
            _close(channel)

    def __enter__(self) -> LoadBalancedChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close(channel: grpc.Channel) -> None:
    channel.close()


class _MultiCallable:
    """What the four kinds share: the per-sub-channel multicallable and the two call shapes."""

    def __init__(self, channel: LoadBalancedChannel, method: Method) -> None:
        self._channel = channel
        self._method = method

    def _blocking(
        self, request: Any, replayable: bool, with_call: bool, timeout: float | None, *args: Any
    ) -> Any:
        """Run to completion, retrying elsewhere while _core allows; args: grpcio's own.

        A ``plain`` call (no admission, no hedging, as grpcio's own) has no RetryState until
        its first attempt fails. One function for all: this runs between two network calls,
        where every extra function call is a cold one."""
        channel = self._channel
        core = channel._core
        method = self._method
        state = core.state or channel._state()
        deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        retry: RetryState | None = None
        ticket = None
        if state is not core.plain_state and not core.plain(state, method.kind):
            retry = core.start(
                state, method.name, request if replayable else None, args[0], replayable=replayable
            )
            ticket = channel._admit(state, retry, deadline.at)
        try:
            if retry is not None and method.kind == "unary_unary":
                hedging = core.hedging(state, retry)
                if hedging is not None:
                    return self._hedged(state, retry, hedging, deadline, request, with_call, args)
            while True:  # the attempts
                handle, lease = channel._next(
                    state, retry, method.name, request if replayable else None, args[0]
                )
                inner = lease.callables.get(method) or method.on(lease)
                if with_call:
                    inner = inner.with_call
                try:
                    timeout = None if deadline.at is None else deadline.remaining()
                    result = inner(request, timeout, *args)
                except grpc.RpcError as error:
                    retry, pause = channel._failed(
                        state, retry, handle, lease, error, deadline, method.name, replayable
                    )
                    time.sleep(pause)
                    continue
                except BaseException as exc:
                    channel._end(handle, lease, exc)
                    raise
                channel._end(handle, lease)
                return result
        finally:
            if ticket is not None:
                ticket.drop()

    def _hedged(
        self,
        state: ServiceState,
        retry: RetryState,
        hedging: Hedging,
        deadline: Deadline,
        request: Any,
        with_call: bool,
        args: tuple[Any, ...],
    ) -> Any:
        """A unary-unary call whose attempts race (``Race`` decides): each is a grpcio
        future, the first OK answer wins and the others are cancelled; when all fail, the
        retry policy decides as for an unhedged call."""
        core = self._channel._core
        while True:
            race = Race(hedging)
            winner, failure = self._race(state, retry, race, deadline, request, args)
            if winner is not None:
                result = winner.result()
                return (result, winner) if with_call else result
            error = failure.exception()
            pause = core.pause(retry, error, deadline)
            if pause is None:
                if len(retry.tried) > 1:
                    error.add_note(core.describe(retry))
                raise error
            time.sleep(pause)

    def _race(
        self,
        state: ServiceState,
        retry: RetryState,
        race: Race,
        deadline: Deadline,
        request: Any,
        args: tuple[Any, ...],
    ) -> tuple[Any, Any]:
        """One round over grpcio futures (``race_futures``): ``(winning future, None)``,
        or ``(None, last failed future)``."""
        channel = self._channel

        def start(handle: PickHandle, lease: Lease[Any]) -> Any:
            try:
                future = self._method.on(lease).future(request, deadline.remaining(), *args)
            except BaseException as exc:
                handle.__exit__(type(exc), exc, None)
                channel._pool.release(lease)
                raise
            _report_attempt_when_done(future, race, handle, lease, channel._pool)
            return future

        handle, lease = channel._begin(state, retry)
        first = start(handle, lease)
        return race_futures(
            race, state, retry, (handle, first), lambda h: start(h, channel._lease(state, h))
        )

    def _started(self, invoke: Callable[[Any], Any], metadata: Any) -> Any:
        """Start one attempt whose outcome is reported when grpcio says the call ended."""
        try:
            return self._channel._started(self._method, invoke, metadata)
        except FailedCall as error:
            return error  # a finished, failed call: raised from result() / next(), as in grpcio


def _report_when_done(
    call: Any, handle: PickHandle, lease: Lease[Any], pool: SubChannelPool[Any]
) -> None:
    # A weak reference: a call its owner dropped must stay collectable, so that grpcio's
    # finalizer cancels it (the callback then reports a cancellation).
    ref = weakref.ref(call)

    def ended() -> None:
        current = ref()
        try:
            if current is None:
                report(handle, None, None)
            else:
                report(handle, current.code(), current.details())
        finally:
            pool.release(lease)

    if not call.add_callback(ended):
        ended()


def _report_attempt_when_done(
    future: Any, race: Race, handle: PickHandle, lease: Lease[Any], pool: SubChannelPool[Any]
) -> None:
    """``_report_when_done`` for an attempt of a hedged call (the race holds it strongly:
    it is waited for or cancelled)."""

    def ended(done: Any) -> None:
        try:
            report_attempt(race, handle, done.code(), done.details())
        finally:
            pool.release(lease)

    future.add_done_callback(ended)


class _UnaryUnary(_MultiCallable, _UnaryUnaryBase):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._blocking(
            request, True, False, timeout, metadata, credentials, wait_for_ready, compression
        )

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._blocking(
            request, True, True, timeout, metadata, credentials, wait_for_ready, compression
        )

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._started(
            lambda inner: inner.future(
                request, timeout, metadata, credentials, wait_for_ready, compression
            ),
            metadata,
        )


class _UnaryStream(_MultiCallable, _UnaryStreamBase):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        channel = self._channel
        deadline = Deadline(timeout)

        def attempt(state: ServiceState, retry: RetryState, remaining: float | None) -> Any:
            return channel._attempt(
                state,
                retry,
                self._method,
                lambda inner: inner(
                    request, remaining, metadata, credentials, wait_for_ready, compression
                ),
            )

        try:
            first, restart, retry = channel._open_stream(
                self._method, request, metadata, timeout, attempt
            )
        except FailedCall as error:
            return error  # a finished, failed call: raised from next(), as in grpcio
        return RetryingResponseStream(first, restart, channel._core, retry, deadline)


class _StreamUnary(_MultiCallable, _StreamUnaryBase):
    def __call__(
        self,
        request_iterator: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._blocking(
            request_iterator,
            False,
            False,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )

    def with_call(
        self,
        request_iterator: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._blocking(
            request_iterator,
            False,
            True,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )

    def future(
        self,
        request_iterator: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._started(
            lambda inner: inner.future(
                request_iterator, timeout, metadata, credentials, wait_for_ready, compression
            ),
            metadata,
        )


class _StreamStream(_MultiCallable, _StreamStreamBase):
    def __call__(
        self,
        request_iterator: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._started(
            lambda inner: inner(
                request_iterator, timeout, metadata, credentials, wait_for_ready, compression
            ),
            metadata,
        )


def insecure_channel(
    service: str,
    lb: LoadBalancer,
    options: ChannelOptions | None = None,
    compression: grpc.Compression | None = None,
    **lb_options: Unpack[BalancingOptions],
) -> LoadBalancedChannel:
    """A plaintext channel balancing each call over the instances of ``service``.

    >>> import lbclient, lbclient.grpc
    >>> lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:50051", "127.0.0.1:50052"]})
    >>> channel = lbclient.grpc.insecure_channel("orders", lb, idempotent={"/orders.Orders/Get"})
    >>> # stub = OrdersStub(channel); stub.Get(request)   -- each call picks an instance
    >>> channel.close(); lb.close()

    ``options`` and ``compression`` are grpcio's, applied to every per-instance sub-channel.
    ``lb_options``: ``key`` (metadata name or ``key(method, request, metadata)`` function for
    hash-based schedulers; default ``"lb-key"``), ``idempotent`` (full method names that may
    be resent after UNAVAILABLE, or ``"all"``), ``retry`` (a RetryPolicy; default: the
    service's), ``hedge`` (a HedgePolicy for the ``idempotent`` unary-unary methods called
    with ``__call__``/``with_call``; default: the service's).
    """
    return LoadBalancedChannel(
        service, lb, options=options, compression=compression, **balancing(lb_options)
    )


def secure_channel(
    service: str,
    lb: LoadBalancer,
    credentials: grpc.ChannelCredentials,
    options: ChannelOptions | None = None,
    compression: grpc.Compression | None = None,
    **lb_options: Unpack[BalancingOptions],
) -> LoadBalancedChannel:
    """``insecure_channel`` over TLS: every sub-channel uses ``credentials``.

    Sub-channels target ``host:port`` of each instance; when certificates name the service
    rather than each address, pass ``options=[("grpc.ssl_target_name_override", name)]``.
    """
    return LoadBalancedChannel(
        service,
        lb,
        credentials=credentials,
        options=options,
        compression=compression,
        **balancing(lb_options),
    )
