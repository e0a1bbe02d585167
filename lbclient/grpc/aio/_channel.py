"""LoadBalancedAioChannel: the ``grpc.aio.Channel`` twin of LoadBalancedChannel.

Unary-unary calls run their attempts in one task (a ``grpc.aio.UnaryUnaryCall`` whose
``await`` gives the response of the last attempt), so they can be retried on another
instance; unary-stream calls can move until their first message (``_stream.py``).
Request-streaming calls make one attempt and return grpcio's own call object. Every
attempt's outcome is reported by grpcio's done callback. Interceptors given to the
channel are installed on every sub-channel: they run once per attempt and see the instance
the call really goes to.

The service is resolved on first use. A unary call does that without blocking the loop; a
streaming call cannot wait, so with a registry that needs the network (Consul, Kubernetes)
``await channel.channel_ready()`` once before the first streaming call. A streaming call
that finds no instance raises ``NoInstanceAioRpcError`` when it is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, Literal, Unpack

import grpc
import grpc.aio

from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._exceptions import LBError
from lbclient._handle import PickHandle
from lbclient._hedge import HedgePolicy
from lbclient._instance import ServiceInstance
from lbclient._retry import RetryPolicy, RetryState
from lbclient.grpc._base import Balancing, Method
from lbclient.grpc._core import DEFAULT_KEY_METADATA, ChannelCore, Deadline, KeyFunction, report
from lbclient.grpc._errors import NoInstanceAioRpcError, aio_rpc_error
from lbclient.grpc._options import BalancingOptions, balancing, check_channel_args
from lbclient.grpc._pool import Lease, SubChannelPool
from lbclient.grpc.aio._stream import RetryingAioResponseStream
from lbclient.grpc.aio._unary import RetryingUnaryCall

ChannelOptions = Collection[tuple[str, Any]]
_STATE_POLL = 0.05
"""Seconds between checks in ``wait_for_state_change`` (the balancer has no change event)."""


class LoadBalancedAioChannel(Balancing, grpc.aio.Channel):
    """An asyncio channel to every instance of ``service``; build it with ``insecure_channel``."""

    @staticmethod
    def error_class(service: str, cause: LBError) -> Exception:
        return aio_rpc_error(service, cause)

    def __init__(
        self,
        service: str,
        lb: LoadBalancer,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: ChannelOptions | None = None,
        compression: grpc.Compression | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
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
        self._interceptors = list(interceptors) if interceptors else None
        self._pool: SubChannelPool[grpc.aio.Channel] = SubChannelPool(
            self._subchannel, self._discard
        )
        self._closing: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<LoadBalancedAioChannel {self._core.service!r} sub-channels={len(self._pool)}>"

    @property
    def service(self) -> str:
        return self._core.service

    @property
    def pool(self) -> SubChannelPool[grpc.aio.Channel]:
        """The per-instance sub-channels (read-only use: addresses, size)."""
        return self._pool

    def _subchannel(self, instance: ServiceInstance) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(
                instance.address, self._options, self._compression, self._interceptors
            )
        return grpc.aio.secure_channel(
            instance.address,
            self._credentials,
            self._options,
            self._compression,
            self._interceptors,
        )

    def _discard(self, channel: grpc.aio.Channel) -> None:
        # Retired while a call starts, inside the loop: close in the background and let
        # close() wait for it.
        task = asyncio.get_running_loop().create_task(channel.close(None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _report_when_done(self, call: Any, handle: PickHandle, lease: Lease[Any]) -> None:
        call.add_done_callback(functools.partial(_ended, handle, lease, self._pool))

    async def _astate(self) -> ServiceState:
        state = self._core.state
        if state is None:
            try:
                state = self._core.resolved(await self._core.lb.aservice(self._core.service))
            except LBError as exc:
                raise NoInstanceAioRpcError(self._core.service, exc) from exc
        return state

    # -- grpc.aio.Channel --------------------------------------------------------------------

    async def __aenter__(self) -> LoadBalancedAioChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Close every sub-channel (running calls get ``grace`` seconds, as in grpcio)."""
        closing = [channel.close(grace) for channel in self._pool.close()]
        await asyncio.gather(*closing, *self._closing)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """IDLE before the first call, then READY while the service has a usable instance."""
        state = self._core.state
        if state is None:
            return grpc.ChannelConnectivity.IDLE
        if state.scheduler is None:
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.READY

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        # The balancer publishes no change event; poll its (cheap, lock-free) state.
        while self.get_state() == last_observed_state:  # noqa: ASYNC110
            await asyncio.sleep(_STATE_POLL)

    async def channel_ready(self) -> None:
        """Resolve the service (without blocking the loop) and wait for a usable instance."""
        with contextlib.suppress(grpc.RpcError):
            await self._astate()
        while (current := self.get_state()) is not grpc.ChannelConnectivity.READY:
            await self.wait_for_state_change(current)

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryUnary:
        spec = Method(
            "unary_unary", method, request_serializer, response_deserializer, _registered_method
        )
        return _UnaryUnary(self, spec)

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryStream:
        spec = Method(
            "unary_stream", method, request_serializer, response_deserializer, _registered_method
        )
        return _UnaryStream(self, spec)

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamUnary:
        spec = Method(
            "stream_unary", method, request_serializer, response_deserializer, _registered_method
        )
        return _StreamUnary(self, spec)

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamStream:
        spec = Method(
            "stream_stream", method, request_serializer, response_deserializer, _registered_method
        )
        return _StreamStream(self, spec)


class _MultiCallable:
    def __init__(self, channel: LoadBalancedAioChannel, method: Method) -> None:
        self._channel = channel
        self._method = method

    def _started(self, invoke: Callable[[Any], Any], metadata: Any) -> Any:
        """One attempt whose outcome is reported by grpcio's done callback."""
        return self._channel._started(self._method, invoke, metadata)


def _ended(handle: PickHandle, lease: Lease[Any], pool: SubChannelPool[Any], call: Any) -> None:
    try:
        if call.cancelled():
            handle.cancel()
            return
        code, details = _now(call.code()), _now(call.details())
        if code is _PENDING or details is _PENDING:  # pragma: no cover - not seen with grpcio
            lease.start()  # keep the sub-channel until the task below reports
            asyncio.get_running_loop().create_task(_report_later(handle, lease, pool, call))
            return
        report(handle, code, details)
    finally:
        pool.release(lease)


_PENDING = object()


def _now(awaitable: Coroutine[Any, Any, Any]) -> Any:
    """The value of a coroutine that completes without suspending (the call is done), or
    ``_PENDING`` if it would have to wait."""
    try:
        awaitable.send(None)
    except StopIteration as stop:
        return stop.value
    awaitable.close()
    return _PENDING


async def _report_later(
    handle: PickHandle, lease: Lease[Any], pool: SubChannelPool[Any], call: Any
) -> None:  # pragma: no cover - fallback of _ended
    try:
        report(handle, await call.code(), await call.details())
    finally:
        pool.release(lease)


class _UnaryUnary(_MultiCallable, grpc.aio.UnaryUnaryMultiCallable[Any, Any]):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> RetryingUnaryCall:
        return RetryingUnaryCall(
            self._channel,
            self._method,
            request,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            compression,
        )


class _UnaryStream(_MultiCallable, grpc.aio.UnaryStreamMultiCallable[Any, Any]):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        channel = self._channel

        def attempt(state: ServiceState, retry: RetryState, remaining: float | None) -> Any:
            return channel._attempt(
                state,
                retry,
                self._method,
                lambda inner: inner(
                    request,
                    timeout=remaining,
                    metadata=metadata,
                    credentials=credentials,
                    wait_for_ready=wait_for_ready,
                    compression=compression,
                ),
            )

        first, restart, retry = channel._open_stream(
            self._method, request, metadata, timeout, attempt
        )
        return RetryingAioResponseStream(first, restart, channel._core, retry, Deadline(timeout))


class _StreamUnary(_MultiCallable, grpc.aio.StreamUnaryMultiCallable[Any, Any]):
    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._started(
            lambda inner: inner(
                request_iterator,
                timeout=timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            ),
            metadata,
        )


class _StreamStream(_MultiCallable, grpc.aio.StreamStreamMultiCallable[Any, Any]):
    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._started(
            lambda inner: inner(
                request_iterator,
                timeout=timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            ),
            metadata,
        )


def insecure_channel(
    service: str,
    lb: LoadBalancer,
    options: ChannelOptions | None = None,
    compression: grpc.Compression | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    **lb_options: Unpack[BalancingOptions],
) -> LoadBalancedAioChannel:
    """The asyncio ``lbclient.grpc.insecure_channel``; ``interceptors`` as in grpc.aio.

    >>> channel = lbclient.grpc.aio.insecure_channel("orders", lb)    # doctest: +SKIP
    >>> reply = await OrdersStub(channel).Get(request)                # doctest: +SKIP
    """
    return LoadBalancedAioChannel(
        service,
        lb,
        options=options,
        compression=compression,
        interceptors=interceptors,
        **balancing(lb_options),
    )


def secure_channel(
    service: str,
    lb: LoadBalancer,
    credentials: grpc.ChannelCredentials,
    options: ChannelOptions | None = None,
    compression: grpc.Compression | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    **lb_options: Unpack[BalancingOptions],
) -> LoadBalancedAioChannel:
    """The asyncio ``lbclient.grpc.secure_channel``."""
    return LoadBalancedAioChannel(
        service,
        lb,
        credentials=credentials,
        options=options,
        compression=compression,
        interceptors=interceptors,
        **balancing(lb_options),
    )
