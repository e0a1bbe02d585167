"""The errors a load-balanced channel raises itself: gRPC errors that are also lbclient errors.

gRPC code catches ``grpc.RpcError`` and reads ``code()``; lbclient code catches ``LBError``.
When the channel refuses a call itself, it raises one object that satisfies both, with
details that name the service and say what to do, and the lbclient error's fields:

===================  =====================  ============================================
lbclient error       status                 why that status
===================  =====================  ============================================
NoAvailableInstance  UNAVAILABLE            what grpcio answers when resolution finds none
Overloaded           RESOURCE_EXHAUSTED     a local limit, as gRPC's own flow control says
CircuitOpen          UNAVAILABLE            the service is considered down for a while
===================  =====================  ============================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from lbclient._exceptions import CircuitOpen, LBError, NoAvailableInstance, Overloaded

if TYPE_CHECKING:  # generic in grpc-stubs, a plain class at run time
    _Future = grpc.Future[Any]
else:
    _Future = grpc.Future


def no_instance_message(service: str, cause: BaseException) -> str:
    return f"lbclient: no instance of service {service!r} can take the call: {cause}"


class FailedCall(grpc.RpcError, grpc.Call, _Future):
    """A call the sync channel refused itself, with status ``status``.

    Like grpcio's own failed calls it is also a finished ``grpc.Future`` and an iterator that
    raises it, so ``future()`` and streaming calls report it where grpcio would: from
    ``result()`` and from the first ``next()``.
    """

    status = grpc.StatusCode.UNAVAILABLE
    _details = ""

    def code(self) -> grpc.StatusCode:
        return self.status

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

    def __iter__(self) -> FailedCall:
        return self

    def __next__(self) -> Any:
        raise self


class NoInstanceRpcError(NoAvailableInstance, FailedCall):
    """Status UNAVAILABLE raised by the sync channel when the pick finds no instance."""

    def __init__(self, service: str, cause: BaseException) -> None:
        super().__init__(no_instance_message(service, cause), service=service)
        self._details = str(self)


class OverloadedRpcError(Overloaded, FailedCall):
    """Status RESOURCE_EXHAUSTED raised by the sync channel when a limit refuses the call."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, service: str, cause: Overloaded) -> None:
        super().__init__(f"lbclient: {cause}", limit=cause.limit, service=service)
        self._details = str(self)


class CircuitOpenRpcError(CircuitOpen, FailedCall):
    """Status UNAVAILABLE raised by the sync channel while the circuit breaker is open."""

    def __init__(self, service: str, cause: CircuitOpen) -> None:
        super().__init__(f"lbclient: {cause}", retry_in=cause.retry_in, service=service)
        self._details = str(self)


def rpc_error(service: str, cause: LBError) -> FailedCall:
    """The sync channel's error for a refusal of ours."""
    if isinstance(cause, Overloaded):
        return OverloadedRpcError(service, cause)
    if isinstance(cause, CircuitOpen):
        return CircuitOpenRpcError(service, cause)
    return NoInstanceRpcError(service, cause)


def _aio_fields(error: Any, message: str, code: grpc.StatusCode) -> None:
    # AioRpcError and LBError chain __init__ through super() with incompatible signatures:
    # set the fields of each directly instead.
    Exception.__init__(error, message)
    error._code = code
    error._details = message
    error._initial_metadata = None
    error._trailing_metadata = None
    error._debug_error_string = None


class NoInstanceAioRpcError(grpc.aio.AioRpcError, NoAvailableInstance):
    """Status UNAVAILABLE raised by the aio channel when the pick finds no instance."""

    def __init__(self, service: str, cause: BaseException) -> None:
        _aio_fields(self, no_instance_message(service, cause), grpc.StatusCode.UNAVAILABLE)
        self.service = service
        self.instance = None


class OverloadedAioRpcError(grpc.aio.AioRpcError, Overloaded):
    """Status RESOURCE_EXHAUSTED raised by the aio channel when a limit refuses the call."""

    def __init__(self, service: str, cause: Overloaded) -> None:
        _aio_fields(self, f"lbclient: {cause}", grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.service = service
        self.instance = None
        self.limit = cause.limit


class CircuitOpenAioRpcError(grpc.aio.AioRpcError, CircuitOpen):
    """Status UNAVAILABLE raised by the aio channel while the circuit breaker is open."""

    def __init__(self, service: str, cause: CircuitOpen) -> None:
        _aio_fields(self, f"lbclient: {cause}", grpc.StatusCode.UNAVAILABLE)
        self.service = service
        self.instance = None
        self.retry_in = cause.retry_in


def aio_rpc_error(service: str, cause: LBError) -> grpc.aio.AioRpcError:
    """The aio channel's error for a refusal of ours."""
    if isinstance(cause, Overloaded):
        return OverloadedAioRpcError(service, cause)
    if isinstance(cause, CircuitOpen):
        return CircuitOpenAioRpcError(service, cause)
    return NoInstanceAioRpcError(service, cause)
