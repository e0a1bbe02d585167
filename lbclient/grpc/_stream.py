"""RetryingResponseStream: a sync unary-stream call that may change instance until its first
message.

Until a response message has been delivered, nothing the caller saw depends on which
instance answered, so a retryable failure (``_core.py``: a connection failure for any
method, UNAVAILABLE for idempotent ones) starts the call again on another instance, within
the same deadline. After the first message the call is pinned, and ``__next__`` is a plain
delegation: one Python call per message, next to grpcio's own per-message work.

Callbacks added with ``add_callback``/``add_done_callback`` are registered on the current
attempt; add them after the first message if a retry must not trigger them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from lbclient.grpc._core import Restartable

if TYPE_CHECKING:  # generic in grpc-stubs, a plain class at run time
    _Future = grpc.Future[Any]
else:
    _Future = grpc.Future


class RetryingResponseStream(Restartable, grpc.Call, _Future):
    """Iterator, ``grpc.Call`` and ``grpc.Future``, like the call object grpcio returns."""

    def __iter__(self) -> RetryingResponseStream:
        return self

    def __next__(self) -> Any:
        if self._received:
            return next(self._call)
        try:
            while True:
                try:
                    message = next(self._call)
                except grpc.RpcError as error:
                    time.sleep(self._pause_or_raise(error))
                    self._move()
                    continue
                self._received = True
                return message
        finally:  # a first message, the end or an error: no restart can follow
            self._pinned()

    next = __next__  # grpcio's call objects offer both

    # -- grpc.Call and grpc.Future: the current attempt's ------------------------------------

    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = self._call.code()
        return code

    def details(self) -> str:
        details: str = self._call.details()
        return details

    def is_active(self) -> bool:
        return bool(self._call.is_active())

    def time_remaining(self) -> float:
        remaining: float = self._call.time_remaining()
        return remaining

    def cancel(self) -> bool:
        self._pinned()
        return bool(self._call.cancel())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return bool(self._call.add_callback(callback))

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def running(self) -> bool:
        return bool(self._call.running())

    def done(self) -> bool:
        return bool(self._call.done())

    def result(self, timeout: float | None = None) -> Any:
        return self._call.result(timeout)

    def exception(self, timeout: float | None = None) -> Exception | None:
        error: Exception | None = self._call.exception(timeout)
        return error

    def traceback(self, timeout: float | None = None) -> Any:
        return self._call.traceback(timeout)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._call.add_done_callback(lambda _: fn(self))
