"""What a request's completion tells the balancer: how long it took and how it failed, if it did."""

from __future__ import annotations

import dataclasses
import enum


class Failure(enum.Enum):
    """Why an attempt failed, in the categories outlier detection counts separately (Envoy's).

    ``CONNECT`` and ``TIMEOUT`` are local-origin failures: the instance never answered.
    ``GATEWAY`` is a 502/503/504 (or gRPC UNAVAILABLE); ``SERVER`` any other 5xx.
    ``ERROR``: an exception the balancer could not classify.
    """

    CONNECT = "connect"
    TIMEOUT = "timeout"
    RESET = "reset"
    GATEWAY = "gateway"
    SERVER = "server"
    ERROR = "error"
    """An exception the balancer could not classify, raised while the request was running."""

    @property
    def local_origin(self) -> bool:
        """True when the failure happened before the instance produced an answer."""
        return self in (Failure.CONNECT, Failure.TIMEOUT, Failure.RESET)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt on one instance.

    ``failure`` None means success. ``cancelled`` means the caller gave up: the attempt counts
    neither as a success nor as a failure of the instance, but its in-flight slot is released.
    """

    latency: float
    failure: Failure | None = None
    cancelled: bool = False
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.cancelled


def failure_for_status(status: int) -> Failure | None:
    """Map an HTTP status to a failure kind; 4xx are the caller's fault, not the instance's."""
    if status in (502, 503, 504):
        return Failure.GATEWAY
    if status >= 500:
        return Failure.SERVER
    return None
