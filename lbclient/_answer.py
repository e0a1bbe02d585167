"""A registry answer read entry by entry: the instances that are valid, the entries skipped.

One malformed entry (a Consul service with ``Port: "8080"``, an EndpointSlice with
``addresses: [null]``, an etcd value that is not JSON) must not hide the others, nor freeze
the whole list: each registry's parser reads every entry through ``AnswerReader.attempt``,
which keeps what parses and records what does not. The result is ``Instances``, a tuple that
also carries the skipped entries, so ``ServiceState`` can log each one once and count them in
``stats()`` without any registry knowing about the balancer. Only an answer malformed as a
whole (not JSON, the wrong top-level type) is an error, and the last good list stays.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import ParamSpec, TypeVar

from lbclient._address import show
from lbclient._exceptions import ConfigurationError, RegistryUnavailable
from lbclient._instance import ServiceInstance
from lbclient._share import shared

log = logging.getLogger("lbclient.registry")

T = TypeVar("T")
P = ParamSpec("P")

ENTRY_ERRORS = (
    ConfigurationError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    AttributeError,
    OverflowError,
)
"""What reading one malformed JSON entry can raise: a missing key, a wrong type, a bad value."""


@dataclasses.dataclass(frozen=True)
class SkippedEntry:
    """One entry of an answer that was not used, and why (both short, for logs and stats)."""

    entry: str
    reason: str


class Instances(tuple[ServiceInstance, ...]):
    """A registry answer: the valid instances, plus ``skipped``, the entries left out."""

    skipped: tuple[SkippedEntry, ...]

    def __new__(
        cls, instances: Iterable[ServiceInstance] = (), skipped: Iterable[SkippedEntry] = ()
    ) -> Instances:
        self = super().__new__(cls, instances)
        self.skipped = tuple(skipped)
        return self


def skipped_of(instances: Sequence[ServiceInstance]) -> tuple[SkippedEntry, ...]:
    """The entries a registry skipped in this answer (none for a plain sequence)."""
    return instances.skipped if isinstance(instances, Instances) else ()


class AnswerReader:
    """Reads the entries of one answer, keeping each failure as a SkippedEntry.

    An answer whose entries are ALL malformed (at least one, none valid) is treated as
    malformed as a whole: publishing it would empty the list on garbage, so ``result``
    raises RegistryUnavailable and the last good list stays. Entries the registry itself
    says not to use (critical, weight 0, not ready) are not "skipped": an answer of only
    those is a valid empty list.
    """

    def __init__(self, service: str, source: str) -> None:
        self.service = service
        self.source = source
        self.skipped: list[SkippedEntry] = []

    def attempt(
        self, label: object, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T | None:
        """``read(*args)``, or None (the entry recorded as skipped) when it is malformed."""
        try:
            return read(*args, **kwargs)
        except ENTRY_ERRORS as exc:
            self.skip(label, exc)
            return None

    def skip(self, label: object, reason: object) -> None:
        """Record an entry as skipped; ``reason`` is a message or the exception raised."""
        if isinstance(reason, BaseException) and not isinstance(reason, ConfigurationError):
            reason = f"{type(reason).__name__}: {reason}"
        if isinstance(label, str) and len(label) <= 120 and label.isprintable():
            entry = label
        else:
            entry = show(label, 120)
        self.skipped.append(SkippedEntry(entry, _escape(_truncate(str(reason), 400))))

    def result(self, instances: Iterable[ServiceInstance]) -> Instances:
        """The answer to publish; RegistryUnavailable when every entry was malformed."""
        answer = Instances(instances, self.skipped)
        if self.skipped and not answer:
            first = self.skipped[0]
            raise RegistryUnavailable(
                f"{self.source} sent a malformed answer for service {self.service!r}: all "
                f"{len(self.skipped)} entries are invalid (first: {first.entry}: "
                f"{first.reason}); keeping the last good list",
                service=self.service,
            )
        return answer


_SHARED: dict[str, str] = {}


def share(text: str) -> str:
    """One string object for equal values read from registry answers (a node, a zone, a
    namespace: the same for many instances), so 100,000 instances do not hold 100,000
    copies. A bounded table, emptied when full: a value seen again is shared again."""
    return shared(_SHARED, text)


def report_skipped(
    service: str, instances: Sequence[ServiceInstance], before: frozenset[SkippedEntry]
) -> frozenset[SkippedEntry]:
    """Log the entries skipped now that were not skipped in the previous answer (so each bad
    entry is logged once, not at every answer); return the set to pass next time."""
    now = frozenset(skipped_of(instances))
    for skipped in sorted(now - before, key=lambda s: (s.entry, s.reason)):
        log.warning("%s: registry entry %s skipped: %s", service, skipped.entry, skipped.reason)
    return now


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _escape(text: str) -> str:
    """Registry data can carry CR/LF or escape codes: never let them forge a log line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
