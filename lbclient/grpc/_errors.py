"""The errors a load-balanced channel raises itself: gRPC errors that are also lbclient errors.

gRPC code catches ``grpc.RpcError`` and reads ``code()``; lbclient code catches ``LBError``.
When no instance can take a call, the channel raises one object that satisfies both: status
UNAVAILABLE (what grpcio itself answers when name resolution finds nothing), details that
name the service and say what to do, and the ``NoAvailableInstance`` fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from lbclient._exceptions import NoAvailableInstance

if TYPE_CHECKING:  # generic in grpc-stubs, a plain class at run time
    _Future = grpc.Future[Any]
else:
    _Future = grpc.Future


def no_instance_message(service: str, cause: BaseException) -> str:
    return f"lbclient: no instance of service {service!r} can take the call: {cause}"


class NoInstanceRpcError(NoAvailableInstance, grpc.RpcError, grpc.Call, _Future):
    """Status UNAVAILABLE raised by the sync channel when the pick finds no instance.

    Like grpcio's own failed calls it is also a finished ``grpc.Future`` and an iterator that
    raises it, so ``future()`` and streaming calls report it where grpcio would: from
    ``result()`` and from the first ``next()``.
    """

    def __init__(self, service: str, cause: BaseException) -> None:
        super().__init__(no_instance_message(service, cause), service=service)
        self._details = str(self)

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[Any, ...]:
        return ()

    def trailing_metadata(self) -> tuple[Any, ...]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> Exception:
        return self

    def traceback(self, timeout: float | None = None) -> Any:
        return self.__traceback__

    def add_done_callback(self, fn: Any) -> None:
        fn(self)

    def __iter__(self) -> NoInstanceRpcError:
        return self

    def __next__(self) -> Any:
        raise self


class NoInstanceAioRpcError(grpc.aio.AioRpcError, NoAvailableInstance):
    """Status UNAVAILABLE raised by the aio channel when the pick finds no instance."""

    def __init__(self, service: str, cause: BaseException) -> None:
        # Both bases chain __init__ through super() with incompatible signatures: set the
        # fields of each directly instead.
        message = no_instance_message(service, cause)
        Exception.__init__(self, message)
        self._code = grpc.StatusCode.UNAVAILABLE
        self._details = message
        self._initial_metadata = None
        self._trailing_metadata = None
        self._debug_error_string = None
        self.service = service
        self.instance = None
