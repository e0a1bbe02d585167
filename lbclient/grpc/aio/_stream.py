"""RetryingAioResponseStream: the aio twin of ``lbclient.grpc._stream``.

A unary-stream call that starts again on another instance after a retryable failure, until
its first message has been delivered (then it is pinned). Messages are read from the
current attempt with ``read()`` whichever style the caller uses (``async for`` or
``read()``), because grpc.aio forbids mixing the two on one call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from lbclient._limits import held_until_pinned
from lbclient._retry import RetryState
from lbclient.grpc._core import ChannelCore, Deadline

_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from grpc-stubs


class RetryingAioResponseStream(grpc.aio.UnaryStreamCall[Any, Any]):
    """A ``grpc.aio.UnaryStreamCall`` whose Call methods read the current attempt."""

    def __init__(
        self,
        call: Any,
        restart: Callable[[float | None], Any],
        core: ChannelCore,
        retry: RetryState,
        deadline: Deadline,
    ) -> None:
        self._call = call
        self._restart = restart
        self._core = core
        self._retry = retry
        self._deadline = deadline
        self._received = False
        self._messages: AsyncIterator[Any] | None = None
        self._pinned = held_until_pinned(self, retry)
        """Gives the call's slot back to its attempts' handles: no restart can follow."""

    async def read(self) -> Any:
        if self._received:
            return await self._call.read()
        try:
            while True:
                try:
                    message = await self._call.read()
                except grpc.RpcError as error:
                    pause = self._core.pause(self._retry, error, self._deadline)
                    if pause is None:
                        raise
                    await asyncio.sleep(pause)
                    self._call = self._restart(self._deadline.remaining())
                    continue
                self._received = True
                return message
        finally:  # a first message, the end or an error: no restart can follow
            self._pinned()

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._messages is None:
            self._messages = self._iterate()
        return self._messages

    async def _iterate(self) -> AsyncIterator[Any]:
        while (message := await self.read()) is not _EOF:
            yield message

    # -- grpc.aio.Call: the current attempt's ------------------------------------------------

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def done(self) -> bool:
        return bool(self._call.done())

    def time_remaining(self) -> float | None:
        remaining: float | None = self._call.time_remaining()
        return remaining

    def cancel(self) -> bool:
        self._pinned()
        return bool(self._call.cancel())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._call.add_done_callback(lambda _: callback(self))

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = await self._call.code()
        return code

    async def details(self) -> str:
        details: str = await self._call.details()
        return details

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()
