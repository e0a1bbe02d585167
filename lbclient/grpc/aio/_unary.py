"""RetryingUnaryCall: one logical aio unary call, its attempts driven by its awaiter or a task.

The driver picks an instance, awaits grpcio's call on that instance's sub-channel and, when
``_core.py`` allows, starts again elsewhere after a pause, within the caller's deadline.
``await`` gives the last attempt's response. A call without limits, breaker or hedging
starts its first attempt when it is made, as grpcio starts its own call, so it runs whether
or not anybody awaits it; its driver is then the coroutine that awaits it (the usual
``await stub.Method(request)``; no task of ours, as grpcio's own call needs none), else a
task, started when the call is asked anything or when that attempt ends unawaited. Errors
of the pick (no instance, a closed channel) are raised at ``await``, as grpcio raises its
own. The Call methods (``code()``, ``details()``, metadata)
answer for the last attempt, or for the channel's own error when no attempt could start. A
hedged call (``HedgePolicy``, idempotent methods) races its attempts in tasks of their own
(``lbclient._racing``); the Call methods then answer for the attempt that won, or for the
error raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from lbclient._handle import PickHandle
from lbclient._racing import Race, race_tasks
from lbclient.grpc._base import Method
from lbclient.grpc._core import NO_DEADLINE, Deadline, report_attempt
from lbclient.grpc._pool import Lease

if TYPE_CHECKING:
    from lbclient._balancer import ServiceState
    from lbclient._retry import RetryState
    from lbclient.grpc.aio._channel import LoadBalancedAioChannel


class _Won:
    """The answer that won a race (a response may be any object, None included)."""

    __slots__ = ("response",)

    def __init__(self, response: Any) -> None:
        self.response = response


class RetryingUnaryCall(grpc.aio.UnaryUnaryCall[Any, Any]):
    """One logical unary call: its attempts run in a task, or in the coroutine awaiting it;
    Call methods read the last attempt.

    grpcio's own call is awaited in the caller's task; a task of ours around it would cost two
    more turns of the event loop per call. So a ``plain`` call (``ChannelCore.plain``) starts
    its first attempt when it is made, as grpcio starts its own call (``_first``), and is
    driven by its awaiter (``_driven``): no task, unless an attempt fails and is retried (the
    pause and later attempts run in a task that ``cancel`` can reach). A call first asked
    ``done()``, ``cancel()``, ..., or still not awaited when its first attempt ends (held or
    dropped: ``_first_ended``), hands its attempt to a task (``_start``) that reports it and
    retries as needed; every call that is not plain runs in its task from the start.
    """

    # Class-level defaults: a call sets only what it uses (it is made for every request).
    _call: Any = None
    _error: BaseException | None = None
    _task: asyncio.Task[Any] | None = None
    _first: tuple[PickHandle, Lease[Any]] | None = None
    """A plain call's first attempt (``_call``), started when the call was made and not yet
    taken over by its awaiter or its task: nothing has reported it yet."""
    _driven = False
    """Run by the coroutine that awaited it first (no task of ours)."""
    _retrying: asyncio.Task[Any] | None = None
    _finished: asyncio.Future[None] | None = None
    """Done when a driven call ends; made only when someone else waits for that."""
    _ended = False
    """A driven call has ended (``_error`` or ``_response`` is its answer)."""
    _response: Any = None
    _plain: ServiceState | None = None
    """The service's state when the call was made, if the call was ``plain`` then (a
    state's limits, breaker and hedging never change: it stays plain)."""

    def __init__(
        self,
        channel: LoadBalancedAioChannel,
        method: Method,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> None:
        self._channel = channel
        self._method = method
        self._deadline = NO_DEADLINE if timeout is None else Deadline(timeout)
        self._args = (request, metadata, credentials, wait_for_ready, compression)
        core = channel._core
        state = core.state
        if state is None or not (state is core.plain_state or core.plain(state, "unary_unary")):
            self._start()
            return
        self._plain = state
        try:
            handle, lease = channel._next(state, None, method.name, request, metadata)
        except Exception as exc:  # no instance, a closed channel: raised at await, as grpcio
            self._fail(exc)
            return
        try:
            self._call = self._attempt(lease.callables.get(method) or method.on(lease), timeout)
        except Exception as exc:
            channel._end(handle, lease, exc)
            self._call = None
            self._fail(exc)
            return
        self._first = handle, lease
        self._call.add_done_callback(self._first_ended)

    def _fail(self, error: Exception) -> None:
        """The call ended before any attempt could run: ``error`` answers its awaiters."""
        self._driven = self._ended = True
        self._error = error

    def _attempt(self, inner: Any, timeout: float | None) -> Any:
        """Start one attempt on ``inner`` (grpcio's multicallable) with the call's arguments."""
        request, metadata, credentials, wait_for_ready, compression = self._args
        return inner(
            request,
            timeout=timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )

    def _first_ended(self, call: Any) -> None:
        """grpcio's done callback of the first attempt: a call nobody took over yet (held
        unawaited, or dropped: grpcio's call keeps it alive till here) is reported by its
        task, which retries it if need be; a cancelled RPC (its loop closing) at once."""
        if self._first is not None and self._task is None:
            if call.cancelled():
                self._orphaned()
            else:
                self._start()

    def _start(self) -> asyncio.Task[Any]:
        """The task running the call's attempts (made at once, unless the call is driven)."""
        if self._task is None and not self._driven:
            self._task = task = asyncio.get_running_loop().create_task(self._run())
            if self._first is not None:  # the task takes it over when it starts
                task.add_done_callback(lambda _: self._orphaned())
        assert self._task is not None or self._driven
        return self._task  # type: ignore[return-value]

    def _orphaned(self) -> None:
        """The first attempt is reported cancelled (and its RPC cancelled) if nothing took it
        over: the task was cancelled before it started, or grpcio's call was cancelled."""
        first = self._first
        if first is not None:
            self._first = None
            self._call.cancel()
            self._channel._end(*first, asyncio.CancelledError())

    def __await__(self) -> Generator[Any, None, Any]:
        if self._task is not None:
            return (yield from self._task.__await__())
        if self._driven:  # a second awaiter waits for the first one's answer
            yield from self._settled().__await__()
            if self._error is not None:
                raise self._error
            return self._response
        first = self._first
        assert first is not None  # a plain call not driven nor in a task has its first attempt
        self._driven = True
        self._first = None
        handle, lease = first
        channel = self._channel
        try:
            try:
                response = yield from self._call.__await__()
            except grpc.RpcError as error:
                state = self._plain
                assert state is not None
                retry, pause = channel._failed(
                    state, None, handle, lease, error, self._deadline, self._method.name, True
                )
                self._retrying = asyncio.get_running_loop().create_task(
                    self._later(pause, state, retry)
                )
                response = yield from self._retrying.__await__()
            except BaseException as exc:
                channel._end(handle, lease, exc)
                raise
            else:
                channel._end(handle, lease)
            self._response = response
            return response
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ended = True
            if self._finished is not None:
                self._finished.set_result(None)

    async def _run(self) -> Any:
        channel = self._channel
        core = channel._core
        try:
            state = self._plain or core.state or await channel._astate()
            if core.plain(state, "unary_unary"):  # no admission, no hedging: as grpcio
                return await self._attempts(state, None)
            request, metadata = self._args[:2]
            retry = core.start(state, self._method.name, request, metadata, replayable=True)
            ticket = await channel._aadmit(state, retry, self._deadline.at)
            try:
                hedging = core.hedging(state, retry)
                while hedging is not None:  # rounds of racing attempts, retried as one attempt
                    outcome = await self._race(state, retry, Race(hedging))
                    if isinstance(outcome, _Won):
                        return outcome.response
                    pause = core.pause(retry, outcome, self._deadline)
                    if pause is None:
                        if len(retry.tried) > 1:
                            outcome.add_note(core.describe(retry))
                        raise outcome
                    await asyncio.sleep(pause)
                return await self._attempts(state, retry)
            finally:
                if ticket is not None:
                    ticket.drop()
        except BaseException as exc:
            self._error = exc
            raise

    async def _attempts(self, state: ServiceState, retry: RetryState | None) -> Any:
        """Attempts one after another, the first one possibly already started (``_first``);
        ``retry`` None: a ``ChannelCore.plain`` call, whose retry bookkeeping starts only
        when its first attempt fails."""
        channel = self._channel
        method = self._method
        deadline = self._deadline
        request, metadata = self._args[:2]
        first, self._first = self._first, None
        while True:
            if first is not None:
                (handle, lease), first = first, None
                call = self._call
            else:
                handle, lease = channel._next(state, retry, method.name, request, metadata)
                call = None
            try:
                if call is None:
                    inner = lease.callables.get(method) or method.on(lease)
                    timeout = None if deadline.at is None else deadline.remaining()
                    self._call = call = self._attempt(inner, timeout)
                response = await call
            except grpc.RpcError as error:
                retry, pause = channel._failed(
                    state, retry, handle, lease, error, deadline, method.name, True
                )
                await asyncio.sleep(pause)
                continue
            except BaseException as exc:
                channel._end(handle, lease, exc)
                raise
            channel._end(handle, lease)
            return response

    async def _later(self, pause: float, state: ServiceState, retry: RetryState) -> Any:
        """The retries of a driven call, after ``pause``."""
        await asyncio.sleep(pause)
        return await self._attempts(state, retry)

    async def _race(
        self,
        state: ServiceState,
        retry: RetryState,
        race: Race,
    ) -> Any:
        """One round of a hedged call, its attempts racing in tasks (``race_tasks``): the
        response wrapped in ``_Won``, or the last RpcError."""
        channel = self._channel

        async def one(handle: PickHandle) -> tuple[Any, Any]:
            lease = channel._lease(state, handle)
            try:
                call = self._attempt(self._method.on(lease), self._deadline.remaining())
                if self._call is None:
                    self._call = call
                try:
                    response = await call
                except grpc.RpcError as error:
                    self._call = call  # the Call methods answer for the error raised
                    report_attempt(race, handle, error.code(), error.details())
                    raise
                handle.done()
                return call, response
            except BaseException as exc:  # cancelled (grpcio cancels the RPC too), or ours
                handle.__exit__(type(exc), exc, None)
                raise
            finally:
                channel._pool.release(lease)

        answer, failure = await race_tasks(race, state, retry, channel._pick(state, retry), one)
        if answer is not None:
            self._call = answer[0]
            return _Won(answer[1])
        if not isinstance(failure, grpc.RpcError):
            assert failure is not None
            raise failure
        return failure

    async def _settled(self) -> None:
        if self._driven:
            if not self._ended:
                if self._finished is None:
                    self._finished = asyncio.get_running_loop().create_future()
                await self._finished
        else:
            await asyncio.wait([self._start()])

    def cancelled(self) -> bool:
        if self._driven:
            return self._ended and isinstance(self._error, asyncio.CancelledError)
        return self._start().cancelled()

    def done(self) -> bool:
        return self._ended if self._driven else self._start().done()

    def time_remaining(self) -> float | None:
        return self._deadline.remaining()

    def cancel(self) -> bool:
        if not self._driven:
            return self._start().cancel()
        if self._ended:
            return False
        if self._retrying is not None:
            return self._retrying.cancel()
        if self._call is None:  # pragma: no cover - a driven call starts its attempt at once
            return False
        cancelled: bool = self._call.cancel()  # its awaiter gets the CancelledError
        return cancelled

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._driven:
            asyncio.get_running_loop().create_task(self._settled()).add_done_callback(
                lambda _: callback(self)
            )
        else:
            self._start().add_done_callback(lambda _: callback(self))

    async def _from_call(self, name: str, fallback: Any) -> Any:
        await self._settled()
        if isinstance(self._error, grpc.RpcError) and self._call is None:
            return getattr(self._error, name)()  # no attempt ran: our own error
        if self._call is None:
            return fallback
        value: Awaitable[Any] = getattr(self._call, name)()
        return await value

    async def initial_metadata(self) -> Any:
        return await self._from_call("initial_metadata", None)

    async def trailing_metadata(self) -> Any:
        return await self._from_call("trailing_metadata", None)

    async def code(self) -> grpc.StatusCode:
        if self.cancelled() and self._call is None:
            return grpc.StatusCode.CANCELLED
        code: grpc.StatusCode = await self._from_call("code", grpc.StatusCode.UNKNOWN)
        return code

    async def details(self) -> str:
        details: str = await self._from_call("details", "")
        return details

    async def wait_for_connection(self) -> None:
        await self._settled()
