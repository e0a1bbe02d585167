"""What the sync and aio channels share beyond decisions: resolving, picking, leasing.

``Balancing`` is mixed into both channel classes; ``Method`` is one RPC method as a stub
declared it, turned into grpcio's multicallable on each sub-channel once and cached there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc

from lbclient._balancer import ServiceState
from lbclient._exceptions import ConfigurationError, LBError
from lbclient._handle import PickHandle
from lbclient._limits import Ticket, aadmit, admit
from lbclient._retry import RetryState
from lbclient.grpc._core import ChannelCore, Deadline
from lbclient.grpc._pool import Lease, PoolClosed, SubChannelPool


class Method:
    """``kind`` is the grpcio channel method (``"unary_unary"``, ...) that builds the callable."""

    __slots__ = ("deserializer", "kind", "name", "registered", "serializer")

    def __init__(
        self,
        kind: str,
        name: str,
        serializer: Callable[[Any], bytes] | None,
        deserializer: Callable[[bytes], Any] | None,
        registered: bool | None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.serializer = serializer
        self.deserializer = deserializer
        self.registered = registered

    def on(self, lease: Lease[Any]) -> Any:
        """grpcio's multicallable for this method on the lease's sub-channel."""
        inner = lease.callables.get(self)
        if inner is None:
            make = getattr(lease.channel, self.kind)
            inner = make(
                self.name, self.serializer, self.deserializer, _registered_method=self.registered
            )
            lease.callables[self] = inner
        return inner


class Balancing:
    """Resolve the service once, then pick an instance and lease its sub-channel per attempt."""

    @staticmethod
    def error_class(service: str, cause: LBError) -> Exception:
        """Raised when the channel refuses a call itself (no instance, a limit, the breaker):
        ``_errors.rpc_error`` or ``aio_rpc_error``."""
        raise NotImplementedError

    _core: ChannelCore
    _pool: SubChannelPool[Any]

    def _state(self) -> ServiceState:
        """The service's state; the first call resolves it (blocking, like lb.pick)."""
        state = self._core.state
        if state is None:
            try:
                state = self._core.resolved(self._core.lb.service(self._core.service))
            except LBError as exc:
                raise self.error_class(self._core.service, exc) from exc
        return state

    def _admit(
        self, state: ServiceState, retry: RetryState, deadline: float | None, *, queue: bool = True
    ) -> Ticket | None:
        """Admit the call under the service's limits and breaker (None: it has neither);
        ``queue=False`` for calls that cannot wait (they return a call object at once)."""
        if state.gate is None:
            return None
        try:
            return admit(state.gate, retry, deadline, queue=queue)
        except LBError as exc:
            raise self.error_class(self._core.service, exc) from exc

    async def _aadmit(
        self, state: ServiceState, retry: RetryState, deadline: float | None
    ) -> Ticket | None:
        """``_admit`` for the aio channel's awaited calls (they may wait for a slot)."""
        if state.gate is None:
            return None
        try:
            return await aadmit(state.gate, retry, deadline)
        except LBError as exc:
            raise self.error_class(self._core.service, exc) from exc

    def _open_stream(
        self,
        method: Method,
        request: Any,
        metadata: Any,
        timeout: float | None,
        attempt: Callable[[ServiceState, RetryState, float | None], Any],
    ) -> tuple[Any, Callable[[float | None], Any], RetryState]:
        """Admit a unary-stream call (it cannot wait: its call object is returned at once)
        and make its first attempt: ``(call, restart(remaining), retry)``. The ticket, if
        any, then stays with the stream's attempts (``held_until_pinned``)."""
        state = self._state()
        retry = self._core.start(state, method.name, request, metadata, replayable=True)
        ticket = self._admit(state, retry, None, queue=False)
        restart = functools.partial(attempt, state, retry)
        try:
            return restart(timeout), restart, retry
        except BaseException:
            if ticket is not None:
                ticket.drop()
            raise

    def _started(self, method: Method, invoke: Callable[[Any], Any], metadata: Any) -> Any:
        """Admit a call that returns its call object at once (a future, a stream) and start
        its one attempt; the ticket, if any, stays with the attempt's handle."""
        state = self._state()
        retry = self._core.start(state, method.name, None, metadata, replayable=False)
        ticket = self._admit(state, retry, None, queue=False)
        try:
            return self._attempt(state, retry, method, invoke)
        finally:  # the attempt's handle keeps the ticket until the call ends
            if ticket is not None:
                ticket.drop()

    def _attempt(
        self, state: ServiceState, retry: RetryState, method: Method, invoke: Callable[[Any], Any]
    ) -> Any:
        """Start one attempt, ``invoke(multicallable)``, on a picked instance; its end is
        reported when grpcio says the call ended (``_report_when_done``)."""
        handle, lease = self._begin(state, retry)
        try:
            call = invoke(method.on(lease))
        except BaseException as exc:
            handle.__exit__(type(exc), exc, None)
            self._pool.release(lease)
            raise
        self._report_when_done(call, handle, lease)
        return call

    def _report_when_done(self, call: Any, handle: PickHandle, lease: Lease[Any]) -> None:
        """Report the attempt and release its lease once ``call`` ends (sync: grpcio's
        ``add_callback``; aio: ``add_done_callback``)."""
        raise NotImplementedError

    def _begin(self, state: ServiceState, retry: RetryState) -> tuple[PickHandle, Lease[Any]]:
        handle = self._pick(state, retry)
        return handle, self._lease(state, handle)

    def _pick(self, state: ServiceState, retry: RetryState) -> PickHandle:
        try:
            return self._core.pick(state, retry)
        except LBError as exc:
            raise self.error_class(self._core.service, exc) from exc

    def _next(
        self, state: ServiceState, retry: RetryState | None, method: str, request: Any, meta: Any
    ) -> tuple[PickHandle, Lease[Any]]:
        """``_begin`` for the attempt loops; ``retry`` None: the first attempt of a
        ``ChannelCore.plain`` call, which has no RetryState (yet): the retry budget's deposit
        and the pick, as few calls as possible (this runs between two network calls, where
        every function is cold)."""
        core = self._core
        try:
            if retry is None:
                state.retry_budget.deposit()
                # core.context's common case first, inline: a call without key or metadata
                context = core.contexts.get(method) if meta is None and core.keyless else None
                if context is None or context.zone != state.config.zone:
                    context = core.context(state, method, request, meta)
                handle = state.pick(context)
            else:
                handle = core.pick(state, retry)
        except LBError as exc:
            raise self.error_class(core.service, exc) from exc
        return handle, self._lease(state, handle)

    def _failed(
        self,
        state: ServiceState,
        retry: RetryState | None,
        handle: PickHandle,
        lease: Lease[Any],
        error: grpc.RpcError,
        deadline: Deadline,
        method: str,
        replayable: bool,
    ) -> tuple[RetryState, float]:
        """An attempt of the loops failed with ``error``: report it, release its sub-channel
        and return the call's RetryState and the pause before the next attempt, or raise."""
        core = self._core
        if retry is None:
            retry = core.resume(state, handle, method, replayable=replayable)
        try:
            return retry, core.pause_or_raise(handle, retry, error, deadline)
        finally:
            self._pool.release(lease)

    def _end(self, handle: PickHandle, lease: Lease[Any], exc: BaseException | None = None) -> None:
        """An attempt succeeded (``exc`` None) or raised something else than an RpcError:
        report it and release its sub-channel."""
        try:
            if exc is None:
                handle.done()
            else:
                handle.__exit__(type(exc), exc, None)
        finally:
            self._pool.release(lease)

    def _lease(self, state: ServiceState, handle: PickHandle) -> Lease[Any]:
        """The sub-channel of the picked instance; the handle is cancelled if there is none."""
        try:
            lease = self._pool.acquire(state, handle.endpoint)
        except PoolClosed:
            raise self._closed(handle) from None
        except BaseException:
            handle.cancel()
            raise
        return lease

    def _closed(self, handle: PickHandle) -> ConfigurationError:
        """Cancel ``handle``: this channel is closed; the error saying so."""
        handle.cancel()
        return ConfigurationError(
            f"the load-balanced channel of {self._core.service!r} is closed; create a new channel",
            service=self._core.service,
        )
