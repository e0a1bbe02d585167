"""least_request: power of d choices on in-flight requests, weight-aware like Envoy.

Equal weights (Envoy, gRFC A48): draw ``choice_count`` distinct instances at random (default
2) and take the one with the fewest requests in flight; ties go to the first drawn, so an idle
fleet is used uniformly.

Unequal weights: Envoy schedules by the dynamic weight ``weight / (in_flight + 1) ** bias``
(option ``bias``, default 1.0; 0 ignores load and gives plain weighted random). Envoy keeps an
EDF heap under a lock; we get the same shares lock-free by rejection sampling: draw an
instance in proportion to its static weight and accept it with probability
``1 / (in_flight + 1) ** bias``; an accepted pick is then proportional to the dynamic weight
(an idle fleet: exactly by weight). Draws are capped at ``MAX_DRAWS`` (16): when every draw is
rejected (the whole fleet is busy, around 16 or more in flight everywhere), the draw with the
highest dynamic weight wins. As in Envoy, ``choice_count`` applies to equal weights only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient.schedulers._base import Scheduler
from lbclient.schedulers._choices import sample_indices
from lbclient.schedulers._options import float_option, int_option
from lbclient.schedulers._weights import WeightedDraw

MAX_DRAWS = 16
"""Rejection-sampling draws per pick (unequal weights) before falling back to the best drawn."""


class LeastRequestScheduler(Scheduler):
    """Fewest in-flight among ``choice_count`` random picks (weighted: Envoy's dynamic weight)."""

    name = "least_request"

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        choice_count: int = 2,
        bias: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoints, **kwargs)
        self.choice_count = int_option(self.name, "choice_count", choice_count, minimum=2)
        self.bias = float_option(self.name, "bias", bias)
        self._draw = WeightedDraw([e.weight for e in self.endpoints])

    def choose(self, context: PickContext) -> Endpoint:
        endpoints = self.endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        if self._draw.equal:
            best: Endpoint | None = None
            for index in sample_indices(len(endpoints), self.choice_count, self.rng):
                candidate = endpoints[index]
                if best is None or candidate.in_flight < best.in_flight:
                    best = candidate
            assert best is not None
            return best
        return self._choose_weighted()

    def _choose_weighted(self) -> Endpoint:
        rng, bias = self.rng, self.bias
        best, best_score = self.endpoints[0], -1.0
        for _ in range(MAX_DRAWS):
            candidate = self.endpoints[self._draw.draw(rng)]
            factor = (candidate.in_flight + 1) ** -bias
            if rng.random() < factor:
                return candidate
            if candidate.weight * factor > best_score:
                best, best_score = candidate, candidate.weight * factor
        return best

    def rebuild_options(self) -> dict[str, Any]:
        return {"choice_count": self.choice_count, "bias": self.bias}
