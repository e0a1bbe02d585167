"""RetryingUnaryCall: one logical aio unary call, its attempts driven by one task.

The task picks an instance, awaits grpcio's call on that instance's sub-channel and, when
``_core.py`` allows, starts again elsewhere after a pause, within the caller's deadline.
``await`` gives the last attempt's response (grpcio's own UnaryUnaryCall also runs in a
task); the Call methods (``code()``, ``details()``, metadata) answer for the last attempt,
or for the channel's own error when no attempt could start. A hedged call (``HedgePolicy``,
idempotent methods) races its attempts in tasks of their own (``lbclient._racing``); the
Call methods then answer for the attempt that won, or for the error raised.
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
from lbclient.grpc._core import Deadline, report_attempt

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
    """One logical unary call: its attempts run in a task; Call methods read the last one."""

    def __init__(
        self,
        channel: LoadBalancedAioChannel,
        method: Method,
        request: Any,
        metadata: Any,
        timeout: float | None,
        attempt: Callable[[Any, float | None], Any],
    ) -> None:
        self._channel = channel
        self._method = method
        self._deadline = Deadline(timeout)
        self._call: Any = None
        self._error: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(request, metadata, attempt))

    async def _run(
        self, request: Any, metadata: Any, attempt: Callable[[Any, float | None], Any]
    ) -> Any:
        channel = self._channel
        core = channel._core
        try:
            state = core.state or await channel._astate()
            if core.plain(state, "unary_unary"):  # no admission, no hedging: as grpcio
                return await self._attempts(state, None, request, metadata, attempt)
            retry = core.start(state, self._method.name, request, metadata, replayable=True)
            ticket = await channel._aadmit(state, retry, self._deadline.at)
            try:
                hedging = core.hedging(state, retry)
                while hedging is not None:  # rounds of racing attempts, retried as one attempt
                    outcome = await self._race(state, retry, Race(hedging), attempt)
                    if isinstance(outcome, _Won):
                        return outcome.response
                    pause = core.pause(retry, outcome, self._deadline)
                    if pause is None:
                        if len(retry.tried) > 1:
                            outcome.add_note(core.describe(retry))
                        raise outcome
                    await asyncio.sleep(pause)
                return await self._attempts(state, retry, request, metadata, attempt)
            finally:
                if ticket is not None:
                    ticket.drop()
        except BaseException as exc:
            self._error = exc
            raise

    async def _attempts(
        self,
        state: ServiceState,
        retry: RetryState | None,
        request: Any,
        metadata: Any,
        attempt: Callable[[Any, float | None], Any],
    ) -> Any:
        """Attempts one after another; ``retry`` None: a ``ChannelCore.plain`` call, whose
        retry bookkeeping starts only when its first attempt fails."""
        channel = self._channel
        method = self._method
        deadline = self._deadline
        while True:
            handle, lease = channel._next(state, retry, method.name, request, metadata)
            try:
                inner = lease.callables.get(method) or method.on(lease)
                self._call = call = attempt(inner, deadline.remaining())
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

    async def _race(
        self,
        state: ServiceState,
        retry: RetryState,
        race: Race,
        attempt: Callable[[Any, float | None], Any],
    ) -> Any:
        """One round of a hedged call, its attempts racing in tasks (``race_tasks``): the
        response wrapped in ``_Won``, or the last RpcError."""
        channel = self._channel

        async def one(handle: PickHandle) -> tuple[Any, Any]:
            lease = channel._lease(state, handle)
            try:
                call = attempt(self._method.on(lease), self._deadline.remaining())
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

    def __await__(self) -> Generator[Any, None, Any]:
        return self._task.__await__()

    async def _settled(self) -> None:
        await asyncio.wait([self._task])

    def cancelled(self) -> bool:
        return self._task.cancelled()

    def done(self) -> bool:
        return self._task.done()

    def time_remaining(self) -> float | None:
        return self._deadline.remaining()

    def cancel(self) -> bool:
        return self._task.cancel()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._task.add_done_callback(lambda _: callback(self))

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
        if self._task.cancelled() and self._call is None:
            return grpc.StatusCode.CANCELLED
        code: grpc.StatusCode = await self._from_call("code", grpc.StatusCode.UNKNOWN)
        return code

    async def details(self) -> str:
        details: str = await self._from_call("details", "")
        return details

    async def wait_for_connection(self) -> None:
        await self._settled()
