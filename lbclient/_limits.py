"""Per-service admission: concurrency limits (Envoy's circuit breakers) and the circuit breaker.

``CallGate`` decides without I/O; ``admit`` (threads) and ``aadmit`` (asyncio) are the thin
edges that wait in the pending queue. A call admitted gets a ``Ticket``:

- the ticket holds one of ``max_requests`` slots from admission until the call has ended:
  the caller's reference (dropped by the transport when its call returns or raises) and one
  per attempt handle (dropped when the handle is done, for a returned response when its body
  is closed) keep it; the last drop frees the slot, so it can never leak while handles are
  exact, and a response body being read still counts;
- a call that cannot get a slot waits in a FIFO queue of at most ``max_pending`` callers, for
  at most ``pending_timeout`` seconds (and never past its deadline); a freed slot is handed
  straight to the first waiter, so newcomers cannot overtake the queue;
- a call that retries holds one of ``max_retries`` retry slots from its first retry on;
- with a circuit breaker, the ticket carries its permit and the call's final outcome.

A service with no limit and no breaker has no gate (``ServiceState.gate`` is None): the
request path then pays one attribute test.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from lbclient._breaker import BreakerState, CircuitBreaker
from lbclient._exceptions import Overloaded
from lbclient._outcome import Outcome

if TYPE_CHECKING:
    from lbclient._retry import RetryState


class Ticket:
    """One admitted (or queued) call. Its references are counted under the gate's lock."""

    __slots__ = (
        "closed",
        "failed",
        "gate",
        "generation",
        "granted",
        "queued",
        "refs",
        "retrying",
        "wake",
    )

    def __init__(self, gate: CallGate) -> None:
        self.gate = gate
        self.granted = False
        self.queued = False
        """True when it had to wait: ``settle`` then decides (a slot can come any moment)."""
        self.wake: Callable[[], None] | None = None
        self.refs = 1
        self.closed = False
        self.generation: int | None = None
        self.retrying = False
        self.failed: bool | None = None
        """The call's outcome so far: None (none yet), True (failed), False (succeeded)."""

    def hold(self) -> bool:
        """A new attempt handle joins the call; False once the call has ended."""
        with self.gate.lock:
            if self.closed:
                return False
            self.refs += 1
            return True

    def drop(self, outcome: Outcome | None = None) -> None:
        """An attempt handle is done (with its outcome) or the caller left (None)."""
        with self.gate.lock:
            if outcome is not None and not outcome.cancelled and self.failed is not False:
                self.failed = outcome.failure is not None  # any success makes the call good
            self.refs -= 1
            if self.refs > 0 or self.closed:
                return
            self.closed = True
        self.gate.finish(self)

    def take_retry(self) -> bool:
        """A retry slot for this call (kept until the call ends), or False when all are taken."""
        return self.retrying or self.gate.take_retry(self)


class CallGate:
    """The limits and the breaker of one service (see the module docstring)."""

    def __init__(
        self,
        service: str,
        *,
        max_requests: int | None = None,
        max_pending: int = 0,
        pending_timeout: float = 1.0,
        max_retries: int | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        emit: Callable[..., None] | None = None,
    ) -> None:
        self.service = service
        self._emit = emit
        """``ServiceState.emit`` when the service has listeners (``on_refused``,
        ``on_circuit_state``), else None."""
        self.max_requests = max_requests
        self.max_pending = max_pending
        self.pending_timeout = pending_timeout
        self.max_retries = max_retries
        self.breaker = (
            None
            if circuit_breaker is None
            else BreakerState(
                circuit_breaker,
                service,
                None if emit is None else lambda state: emit("on_circuit_state", state),
            )
        )
        self.lock = threading.Lock()
        self._waiters: collections.deque[Ticket] = collections.deque()
        self.active = 0
        self.retrying = 0
        self.overflows = 0
        """Calls refused because ``max_requests`` and the pending queue were full."""
        self.pending_timeouts = 0
        """Calls refused because they waited ``pending_timeout`` (or their deadline) in vain."""
        self.retry_overflows = 0
        """Retries not made because ``max_retries`` retries were in flight."""

    # -- admission -------------------------------------------------------------------------

    def enter(self, *, queue: bool = True) -> Ticket:
        """A ticket that holds a slot (``granted``) or waits in the queue; raises Overloaded
        when neither is possible (``queue=False``: for calls that cannot wait)."""
        ticket = Ticket(self)
        with self.lock:
            limit = self.max_requests
            if limit is None or (self.active < limit and not self._waiters):
                self.active += 1
                ticket.granted = True
            elif queue and len(self._waiters) < self.max_pending:
                ticket.queued = True
                self._waiters.append(ticket)
                return ticket
            else:
                self.overflows += 1
                waiting = len(self._waiters)
        if not ticket.granted:
            self._refused("max_requests")
            raise Overloaded(
                f"{self.service!r} has max_requests={limit} calls in flight and "
                f"{waiting} of max_pending={self.max_pending} waiting; the call was refused "
                "without being sent (raise the limits, or shed load)",
                limit="max_requests",
                service=self.service,
            )
        self._permit(ticket)
        return ticket

    def arm(self, ticket: Ticket, wake: Callable[[], None]) -> bool:
        """Set how a queued ticket is woken; True when it was granted already (no wait)."""
        with self.lock:
            if ticket.granted:
                return True
            ticket.wake = wake
            return False

    def wait_time(self, deadline: float | None) -> float:
        """How long a queued call may wait: ``pending_timeout``, cut at its deadline."""
        wait = self.pending_timeout
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        return max(wait, 0.0)

    def settle(self, ticket: Ticket) -> None:
        """After waiting: the call goes on (slot granted and breaker passed) or is refused."""
        with self.lock:
            if not ticket.granted:
                self._waiters.remove(ticket)
                self.pending_timeouts += 1
                waited = True
            else:
                waited = False
        if waited:
            self._refused("max_pending")
            raise Overloaded(
                f"{self.service!r}: no slot of max_requests={self.max_requests} came free "
                f"within the pending timeout ({self.pending_timeout:g} s, or the call's "
                "deadline); the call was refused without being sent",
                limit="max_pending",
                service=self.service,
            )
        self._permit(ticket)

    def abandon(self, ticket: Ticket) -> None:
        """A queued caller left (cancelled, interrupted): its place or its slot goes back."""
        with self.lock:
            if not ticket.granted:
                self._waiters.remove(ticket)
                return
            ticket.closed = True
        self._free(ticket)

    def _permit(self, ticket: Ticket) -> None:
        """The breaker's permission for a call holding a slot; refused: the slot goes back."""
        if self.breaker is None:
            return
        try:
            ticket.generation = self.breaker.acquire()
        except BaseException:
            ticket.closed = True
            self._free(ticket)
            self._refused("circuit_open")
            raise

    def _refused(self, reason: str) -> None:
        if self._emit is not None:
            self._emit("on_refused", reason)

    # -- the end of a call -----------------------------------------------------------------

    def take_retry(self, ticket: Ticket) -> bool:
        with self.lock:
            if self.max_retries is not None and self.retrying >= self.max_retries:
                self.retry_overflows += 1
                return False
            self.retrying += 1
            ticket.retrying = True
            return True

    def give_back_retry(self, ticket: Ticket) -> None:
        """A retry slot taken for a retry that did not happen after all."""
        with self.lock:
            if ticket.retrying:
                ticket.retrying = False
                self.retrying -= 1

    def finish(self, ticket: Ticket) -> None:
        """The call has ended: its slots go back, its outcome goes to the breaker."""
        breaker, generation = self.breaker, ticket.generation
        if breaker is not None and generation is not None:
            if ticket.failed is None:
                breaker.release(generation)
            else:
                breaker.record(generation, ticket.failed)
        self._free(ticket)

    def _free(self, ticket: Ticket) -> None:
        wake = None
        with self.lock:
            if ticket.retrying:
                ticket.retrying = False
                self.retrying -= 1
            if self._waiters:  # hand the slot over: ``active`` stays, the queue keeps order
                following = self._waiters.popleft()
                following.granted = True
                wake = following.wake
            else:
                self.active -= 1
        if wake is not None:
            wake()

    def stats(self) -> dict[str, object]:
        with self.lock:
            row: dict[str, object] = {
                "in_flight": self.active,
                "pending": len(self._waiters),
                "retrying": self.retrying,
                "refused_overflow": self.overflows,
                "refused_pending_timeout": self.pending_timeouts,
                "retries_refused_by_limit": self.retry_overflows,
            }
        if self.breaker is not None:
            row["circuit_breaker"] = self.breaker.stats()
        return row


# -- the waiting edges ---------------------------------------------------------------------


def held_until_pinned(owner: object, retry: RetryState) -> Callable[[], object]:
    """For a call that may restart on another instance until its first message: the
    caller's reference to the ticket stays with ``owner`` (the response stream) until the
    returned function is called (pinned, or given up) or ``owner`` is collected, so a
    restart still belongs to the call's slot."""
    ticket = retry.ticket
    if ticket is None:
        return _nothing
    release = weakref.finalize(owner, ticket.drop)
    release.atexit = False
    return release


def _nothing() -> None:
    return None


def admit(
    gate: CallGate, retry: RetryState, deadline: float | None, *, queue: bool = True
) -> Ticket:
    """Admit a call from a thread, waiting in the queue when the limit is reached; its
    attempts (picked with ``retry``) then belong to the returned ticket."""
    ticket = retry.ticket = gate.enter(queue=queue)
    if not ticket.queued:
        return ticket
    event = threading.Event()
    try:
        if not gate.arm(ticket, event.set):
            event.wait(gate.wait_time(deadline))
    except BaseException:
        gate.abandon(ticket)
        raise
    gate.settle(ticket)
    return ticket


async def aadmit(gate: CallGate, retry: RetryState, deadline: float | None) -> Ticket:
    """``admit`` for asyncio: the task waits, the event loop does not."""
    ticket = retry.ticket = gate.enter()
    if not ticket.queued:
        return ticket
    loop = asyncio.get_running_loop()
    granted = loop.create_future()

    def wake() -> None:  # called by whichever thread frees the slot
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, granted)

    try:
        if not gate.arm(ticket, wake):
            await asyncio.wait((granted,), timeout=gate.wait_time(deadline))
    except BaseException:
        gate.abandon(ticket)
        raise
    gate.settle(ticket)
    return ticket


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
