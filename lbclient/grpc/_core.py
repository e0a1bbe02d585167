"""What the sync and aio channels share: key extraction, outcome mapping, retry decisions.

Nothing here does I/O. The two channels (``_sync.py``, ``aio/_channel.py``) are thin drivers
that send, sleep and close around these functions, so their behaviour cannot drift apart.

Outcome mapping (status code of a finished attempt → what the instance is blamed for):

========================  ===================  =====================================
status                    Failure              retried on another instance when
========================  ===================  =====================================
OK and application codes  none (success)       never
UNAVAILABLE, connecting   ``CONNECT``          always (the request never left)
UNAVAILABLE, mid-call     ``RESET``            the method is idempotent
UNAVAILABLE, from server  ``GATEWAY``          the method is idempotent
DEADLINE_EXCEEDED         ``TIMEOUT``          never (the caller's deadline is spent)
INTERNAL, UNKNOWN,        ``SERVER``           never
DATA_LOSS
CANCELLED                 cancelled            never (the caller gave up)
========================  ===================  =====================================

"Application codes" are the ones a healthy server answers with (NOT_FOUND,
INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, ...): the instance
did its job. UNAVAILABLE is split by grpc-core's wording of the status details, which is
the only signal Python gets: "failed to connect" means nothing was sent, anything else is
treated as possibly sent (the safe side). Only calls whose request can be resent (unary
requests) and that have delivered no response message yet are retried: unary-unary calls,
and unary-stream calls up to their first message.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

import grpc

from lbclient import _validate as check
from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._context import PickContext
from lbclient._exceptions import ConfigurationError
from lbclient._handle import PickHandle
from lbclient._hedge import HedgePolicy, Hedging, check_hedge
from lbclient._limits import held_until_pinned
from lbclient._outcome import Failure
from lbclient._racing import Race
from lbclient._retry import RetryPolicy, RetryState, backoff
from lbclient.routing._stage import RoutedScheduler

Metadata = Sequence[tuple[str, str | bytes]]
KeyFunction = Callable[[str, Any, "Metadata | None"], "str | bytes | None"]
"""``key(method, request, metadata)`` → the hash key of a call, or None."""

DEFAULT_KEY_METADATA = "lb-key"
"""Calls sent with metadata ``("lb-key", "user-42")`` are routed by that key."""

_CONNECT_HINTS = ("failed to connect", "connection refused", "connect failed", "no route to host")
_RESET_HINTS = ("socket closed", "connection reset", "broken pipe", "goaway", "stream removed")
_SERVER_CODES = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)
_OK = grpc.StatusCode.OK
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_CANCELLED = grpc.StatusCode.CANCELLED


def key_from_metadata(name: str = DEFAULT_KEY_METADATA) -> KeyFunction:
    """Hash key taken from the call's metadata entry ``name`` (gRPC keys are lower case)."""
    name = name.lower()

    def key(method: str, request: Any, metadata: Metadata | None) -> str | bytes | None:
        if metadata:
            for entry, value in metadata:
                if entry == name:
                    return value
        return None

    return key


def failure_for_code(code: grpc.StatusCode, details: str | None) -> Failure | None:
    """The failure kind an attempt's final status blames on its instance (None: not its fault)."""
    if code is _OK:
        return None
    if code is _UNAVAILABLE:
        text = (details or "").lower()
        if any(hint in text for hint in _CONNECT_HINTS):
            return Failure.CONNECT
        if any(hint in text for hint in _RESET_HINTS):
            return Failure.RESET
        return Failure.GATEWAY
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return Failure.TIMEOUT
    if code in _SERVER_CODES:
        return Failure.SERVER
    return None


def report(handle: PickHandle, code: grpc.StatusCode | None, details: str | None) -> None:
    """Complete ``handle`` from a final status (``None``: the call vanished unfinished)."""
    if code is _OK:
        handle.done()
    elif code is None or code is _CANCELLED:
        handle.cancel()
    else:
        handle.done(failure_for_code(code, details), status=code.value[0])


class Deadline:
    """One call's deadline, shared by all its attempts, so retries never extend it."""

    __slots__ = ("at",)

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    @staticmethod
    def of(timeout: float | None) -> Deadline:
        """``Deadline(timeout)``; calls without a timeout share one (nothing to build)."""
        return NO_DEADLINE if timeout is None else Deadline(timeout)

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()


NO_DEADLINE = Deadline(None)


class ChannelCore:
    """Configuration and decisions of one load-balanced channel (see LoadBalancedChannel)."""

    def __init__(
        self,
        lb: LoadBalancer,
        service: str,
        *,
        key: str | KeyFunction | None = DEFAULT_KEY_METADATA,
        retry: RetryPolicy | None = None,
        idempotent: Collection[str] | Literal["all"] = (),
        hedge: HedgePolicy | None = None,
    ) -> None:
        if not isinstance(lb, LoadBalancer):
            raise ConfigurationError(
                f"a load-balanced channel needs a lbclient.LoadBalancer, got {type(lb).__name__}"
            )
        if not service or not isinstance(service, str):
            raise ConfigurationError(f"the service name must be a non-empty str, got {service!r}")
        if idempotent != "all":
            idempotent = check.strings(
                "idempotent", idempotent, example="{'/orders.Orders/Get'} or 'all'"
            )
        bad = [m for m in idempotent if not m.startswith("/")] if idempotent != "all" else []
        if retry is not None:
            check.instance_of("retry", retry, RetryPolicy, "lbclient.RetryPolicy(attempts=2)")
        if key is not None and not ((isinstance(key, str) and key) or callable(key)):
            raise check.invalid("key", key, "a metadata name such as 'lb-key', a function or None")
        if bad:
            raise ConfigurationError(
                f"idempotent methods must be full names like '/package.Service/Method', got {bad}"
            )
        self.hedge = check_hedge(hedge)
        self.lb = lb
        self.service = service
        self.key: KeyFunction | None = key_from_metadata(key) if isinstance(key, str) else key
        self.keyless = key is None or isinstance(key, str)
        """No key, or one read from the metadata only: a call without metadata has none."""
        self._retry = retry
        self._methods = None if idempotent == "all" else frozenset(idempotent)
        self._policies: dict[int, RetryPolicy] = {}
        self.contexts: dict[str, PickContext] = {}
        """The shared context of each method's calls that carry no key (see ``context``)."""
        self.state: ServiceState | None = None
        self.plain_state: ServiceState | None = None
        """A state whose calls are all ``plain``, once ``plain`` found so: the request path
        compares identities instead of calling ``plain``."""

    def resolved(self, state: ServiceState) -> ServiceState:
        self.state = state
        return state

    def policy(self, state: ServiceState) -> RetryPolicy:
        """The service's retry policy with our idempotent methods (built once per config)."""
        policy = self._policies.get(id(state.config))
        if policy is None:
            base = self._retry or state.config.retry
            policy = dataclasses.replace(base, methods=self._methods)
            self._policies[id(state.config)] = policy
        return policy

    def context(self, state: ServiceState, method: str, request: Any, metadata: Any) -> PickContext:
        if metadata is None and self.keyless:
            key = None  # the common call: no key to look for (hot path)
        else:
            key = self.key(method, request, metadata) if self.key is not None else None
        if metadata and isinstance(state.scheduler, RoutedScheduler):
            # Request-aware rules read headers and cookies from the call's metadata.
            attributes = {"method": method, "metadata": metadata}
            return PickContext(key=key, zone=state.config.zone, attributes=attributes)
        if key is not None:
            return PickContext(key=key, zone=state.config.zone, attributes={"method": method})
        # Most calls carry no key: share one immutable context per method (hot path).
        context = self.contexts.get(method)
        if context is None or context.zone != state.config.zone:
            context = PickContext(zone=state.config.zone, attributes={"method": method})
            self.contexts[method] = context
        return context

    def start(
        self, state: ServiceState, method: str, request: Any, metadata: Any, *, replayable: bool
    ) -> RetryState:
        return RetryState(
            self.policy(state),
            state.retry_budget,
            method=method,
            replayable=replayable,
            context=self.context(state, method, request, metadata),
        )

    def plain(self, state: ServiceState, kind: str) -> bool:
        """True when a call of ``kind`` needs no admission (no limits, no breaker) and no
        hedging: its first attempt then skips the retry bookkeeping (``Balancing._next``), built
        only if that attempt fails (``resume``), as grpcio's own path does no such work."""
        if state.gate is not None:
            return False
        if self.hedge is None and state.config.hedge is None:
            self.plain_state = state  # every kind is plain with this state (it never changes)
            return True
        return kind != "unary_unary"

    def resume(
        self, state: ServiceState, first: PickHandle, method: str, *, replayable: bool
    ) -> RetryState:
        """The RetryState of a ``plain`` call whose first attempt (``first``) failed, as
        ``start`` and ``pick`` would have left it."""
        retry = RetryState(
            self.policy(state),
            state.retry_budget,
            method=method,
            replayable=replayable,
            context=first.context,
            deposited=True,
        )
        retry.attempt = 1
        retry.record(first.instance.id)
        return retry

    def hedging(self, state: ServiceState, retry: RetryState) -> Hedging | None:
        """The hedging of a unary-unary call, or None when it is not hedged: no policy (the
        channel's, else the service's) or a method outside ``idempotent``."""
        policy = self.hedge or state.config.hedge
        if policy is None or not retry.policy.retries_method(retry.method):
            return None
        hedging = state.hedges.get(policy)
        hedging.start()
        return hedging

    def pick(self, state: ServiceState, retry: RetryState) -> PickHandle:
        handle = state.pick(retry.next_context(), retry.attempt, retry.ticket)
        retry.record(handle.instance.id)
        return handle

    def after_error(
        self, handle: PickHandle, retry: RetryState, error: grpc.RpcError, deadline: Deadline
    ) -> float | None:
        """Report a failed attempt; return the pause before the next one, or None to give up."""
        report(handle, error.code(), error.details())
        return self.pause(retry, error, deadline)

    def pause_or_raise(
        self, handle: PickHandle, retry: RetryState, error: grpc.RpcError, deadline: Deadline
    ) -> float:
        """``after_error`` for the attempt loops: the pause before the next attempt, or
        ``error`` raised (noting the attempts made, when there were several)."""
        pause = self.after_error(handle, retry, error, deadline)
        if pause is None:
            if retry.attempt > 1:
                error.add_note(self.describe(retry))
            raise error
        return pause

    def pause(self, retry: RetryState, error: grpc.RpcError, deadline: Deadline) -> float | None:
        """The pause before retrying after ``error`` (already reported), or None to give up."""
        code: grpc.StatusCode = error.code()
        details: str | None = error.details()
        if code is not _UNAVAILABLE:
            return None
        failure = failure_for_code(code, details)
        assert failure is not None
        pause: float | None = None
        if retry.retry_failure(failure, sent=failure is not Failure.CONNECT):
            pause = backoff(retry.policy, retry.attempt)
            remaining = deadline.remaining()
            if remaining is not None and remaining <= pause:
                pause = None
        if self.state is not None:
            again = pause is not None
            self.state.retried(retry.attempt, failure, granted=again, refused=retry.refused)
        return pause

    def describe(self, retry: RetryState) -> str:
        return f"lbclient: service {self.service!r}: {retry.describe()}"


def report_attempt(
    race: Race, handle: PickHandle, code: grpc.StatusCode | None, details: str | None
) -> None:
    """``report`` for an attempt of a hedged call: once an answer won, the others were
    cancelled, and whatever they end with is not held against their instance."""
    if race.decided and code is not _OK:
        handle.cancel()
    else:
        report(handle, code, details)


class Restartable:
    """What the sync and aio retrying response streams share (``_stream.py``,
    ``aio/_stream.py``): the current attempt, and moving the call to another instance after
    a retryable failure until its first message."""

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
        self._pinned = held_until_pinned(self, retry)
        """Gives the call's slot back to its attempts' handles: no restart can follow."""

    def _pause_or_raise(self, error: grpc.RpcError) -> float:
        """The pause before ``_move`` after ``error``; ``error`` is raised if none may follow."""
        pause = self._core.pause(self._retry, error, self._deadline)
        if pause is None:
            raise error
        return pause

    def _move(self) -> None:
        """Start the call again (on another instance), within its deadline."""
        self._call = self._restart(self._deadline.remaining())
