"""peak_ewma: power of two choices on Finagle's Peak EWMA load.

Two distinct instances are drawn at random; the one with the lower load wins, where the load
is Finagle's ``latency x (in_flight + 1)``: ``Endpoint.latency`` is a moving average that
jumps up at once on a latency peak and decays slowly (decay time ``ewma_decay``), so a slow
instance is avoided quickly and trusted again only gradually. Finagle's penalty applies to an
instance with requests pending but no latency measured yet (it has never answered): its load
is ``PENALTY + in_flight``, which keeps traffic off an instance that hangs from the start. An
instance with no data and nothing pending has load 0, so new instances get tried.

The load is divided by the instance's weight, so weights (and slow start, which lowers the
effective weight) still count; with equal weights this is exactly Finagle's comparison.
"""

from __future__ import annotations

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._choices import sample_indices

PENALTY = float((2**63 - 1) >> 16) / 1e9
"""Finagle's ``Long.MaxValue >> 16`` nanoseconds (about 39 hours), in seconds."""


def peak_ewma_load(endpoint: Endpoint) -> float:
    """Finagle's load of ``endpoint`` per unit of weight (lower is better)."""
    pending = endpoint.in_flight
    cost = endpoint.latency
    if cost == 0.0 and pending:
        return (PENALTY + pending) / endpoint.weight
    return cost * (pending + 1) / endpoint.weight


class PeakEwmaScheduler(Scheduler):
    """The less loaded of two random instances, load = peak EWMA latency x (in flight + 1)."""

    name = "peak_ewma"

    def choose(self, context: PickContext) -> Endpoint:
        endpoints = self.endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        first, second = sample_indices(len(endpoints), 2, self.rng)
        a, b = endpoints[first], endpoints[second]
        return b if peak_ewma_load(b) < peak_ewma_load(a) else a
