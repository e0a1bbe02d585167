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

from lbclient.grpc._core import Restartable

_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from grpc-stubs


class RetryingAioResponseStream(Restartable, grpc.aio.UnaryStreamCall[Any, Any]):
    """A ``grpc.aio.UnaryStreamCall`` whose Call methods read the current attempt."""

    _messages: AsyncIterator[Any] | None = None

    async def read(self) -> Any:
        if self._received:
            return await self._call.read()
        try:
            while True:
                try:
                    message = await self._call.read()
                except grpc.RpcError as error:
                    await asyncio.sleep(self._pause_or_raise(error))
                    self._move()
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
