"""The scheduler contract: built from an immutable usable list, picks one endpoint per request.

A scheduler is pure: no I/O, never blocks, safe to call from many threads and event loops at
once without a global lock. It is rebuilt (a new object) whenever the usable list changes, the
way grpc-go rebuilds its picker, so everything that depends only on the list (rings, tables,
weight schedules) is computed once in ``__init__`` and only read in ``pick``. Live load
(``Endpoint.in_flight``, ``Endpoint.latency``) is read from the endpoints at pick time, or,
for the LVS schedulers over long lists, from an index the endpoints keep up to date.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint


class Scheduler(ABC):
    """Base of every scheduler. Subclasses set ``name`` and implement ``choose``.

    ``endpoints`` is never empty: the balancer raises NoAvailableInstance before building a
    scheduler over nothing. ``previous`` is the scheduler this one replaces, for the few
    algorithms that carry state across list changes (lblc's key table). ``options`` are the
    scheduler's own settings, passed through from the configuration; unknown ones are an error.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    rotates: ClassVar[bool] = False
    """True for rotations (round robin, wrr): a retry must not advance the shared position."""
    uses_weights: ClassVar[bool] = True
    """False for the few that ignore weights (round robin, random, lc): slow start, which
    works by lowering weights, then does nothing, and the configuration warns about it."""
    uses_key: ClassVar[bool] = False
    """True for key-based schedulers (ring_hash, maglev, ...): they read ``PickContext.key``."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        rng: random.Random | None = None,
        previous: Scheduler | None = None,
        **options: Any,
    ) -> None:
        if options:
            from lbclient._exceptions import ConfigurationError

            raise ConfigurationError(f"scheduler {self.name!r} has no option(s) {sorted(options)}")
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self.rng = rng or random.Random()

    @abstractmethod
    def choose(self, context: PickContext) -> Endpoint:
        """Pick one endpoint. Must not block, must not raise for a non-empty list."""

    def pick(self, context: PickContext) -> Endpoint:
        """Pick one endpoint, avoiding ``context.exclude`` when anything else is left."""
        if context.exclude and self.rotates:
            # A retry that moved the rotation would skew it: with A failing, A's retry takes
            # the next slot (B), so the next request lands on A again, and A would receive
            # every first attempt. Retries of a rotation go around it instead.
            remaining = [e for e in self.endpoints if e.id not in context.exclude]
            if remaining:
                return remaining[int(self.rng.random() * len(remaining))]
        chosen = self.choose(context)
        if not context.exclude or chosen.id not in context.exclude:
            return chosen
        return self.choose_excluding(context, chosen)

    def choose_excluding(self, context: PickContext, chosen: Endpoint) -> Endpoint:
        """Retry path: pick among the endpoints not excluded, or reuse ``chosen`` if none is.

        The default builds a throwaway scheduler of the same kind over what is left. It runs
        only on retries; hash-based schedulers override it to walk their ring instead.
        """
        remaining = [e for e in self.endpoints if e.id not in context.exclude]
        if not remaining:
            return chosen
        return type(self)(remaining, rng=self.rng, **self.rebuild_options()).choose(context)

    def rebuild_options(self) -> dict[str, Any]:
        """The options to rebuild an equivalent scheduler with (see ``choose_excluding``)."""
        return {}
