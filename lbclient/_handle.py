"""PickHandle: the result of a pick, whose completion feeds the outcome back exactly once."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import TYPE_CHECKING

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient._instance import ServiceInstance
from lbclient._outcome import Failure, Outcome

if TYPE_CHECKING:
    from lbclient._balancer import ServiceState
    from lbclient._limits import Ticket


class PickHandle:
    """One attempt on one instance. Use it as a context manager so counts never leak.

    >>> with lb.pick("orders") as handle:                       # doctest: +SKIP
    ...     call(handle.instance.address)                      # success unless it raises
    ...     handle.done(failure=Failure.GATEWAY, status=503)   # or report explicitly

    Leaving the block by an exception reports a failure (``asyncio.CancelledError`` and
    ``KeyboardInterrupt`` report a cancellation, which releases the in-flight slot without
    blaming the instance). ``done`` may be called any number of times; only the first counts.
    """

    __slots__ = (
        "_finished",
        "_state",
        "_ticket",
        "attempt",
        "context",
        "endpoint",
        "instance",
        "started",
    )

    def __init__(
        self,
        state: ServiceState,
        endpoint: Endpoint,
        context: PickContext,
        attempt: int = 1,
        ticket: Ticket | None = None,
    ) -> None:
        self._state = state
        self.endpoint = endpoint
        self.instance: ServiceInstance = endpoint.instance
        self.context = context
        self.attempt = attempt
        """1 for a request's first try, 2 for its first retry, ..."""
        self.started = time.monotonic()
        self._finished = False
        self._ticket = ticket if ticket is not None and ticket.hold() else None
        """The admission of the call this attempt belongs to (limits, breaker), if any."""

    def __repr__(self) -> str:
        return f"<PickHandle {self._state.name} -> {self.instance.address}>"

    @property
    def service(self) -> str:
        return self._state.name

    @property
    def state(self) -> ServiceState:
        """The balancer's state of the service this attempt belongs to."""
        return self._state

    @property
    def finished(self) -> bool:
        return self._finished

    def done(
        self, failure: Failure | None = None, *, status: int | None = None, cancelled: bool = False
    ) -> None:
        """Report how the attempt ended and release its in-flight slot (first call only)."""
        if self._finished:
            return
        self._finished = True
        now = time.monotonic()
        if failure is None and not cancelled and self._ticket is None:
            self._state.succeeded(self, now - self.started, now, status)
            return
        outcome = Outcome(now - self.started, failure, cancelled, status)
        try:
            self._state.complete(self, outcome)
        finally:
            if self._ticket is not None:
                self._ticket.drop(outcome)

    def cancel(self) -> None:
        """Release the slot without judging the instance (the caller gave up)."""
        self.done(cancelled=True)

    def __enter__(self) -> PickHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.done()
        elif isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)):
            self.cancel()
        else:
            self.done(classify_exception(exc))

    async def __aenter__(self) -> PickHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def classify_exception(exc: BaseException) -> Failure:
    """Best-effort failure kind of an exception raised while talking to an instance."""
    if isinstance(exc, TimeoutError):
        return Failure.TIMEOUT
    if isinstance(exc, (ConnectionRefusedError, ConnectionAbortedError)):
        return Failure.CONNECT
    if isinstance(exc, ConnectionResetError):
        return Failure.RESET
    if isinstance(exc, OSError):
        return Failure.CONNECT
    return Failure.ERROR
