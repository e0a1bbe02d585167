"""Subset routing and weighted traffic split (Envoy's subset load balancer, canaries).

``SubsetRouter(key="version", header="x-version")`` sends a request carrying
``x-version: v2`` to the instances whose ``metadata["version"] == "v2"``. With
``split={"v1": 95, "v2": 5}``, requests that name no subset are split between subsets by
weight, on a deterministic smooth schedule (one request in 20 goes to v2, evenly spread).

When the chosen subset has no usable instance, ``fallback`` decides (Envoy's
``fallback_policy``): ``"any"`` (``ANY_ENDPOINT``: every usable instance), ``"default"``
(``DEFAULT_SUBSET``: the ``default`` subset), or ``"fail"`` (``NO_FALLBACK``:
``NoAvailableInstance`` naming the subset).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence

from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient._exceptions import ConfigurationError, NoAvailableInstance
from lbclient.routing._base import Router, Routes, group_by, request_header
from lbclient.routing._schedule import Rotation, smooth_cycle

FALLBACKS = ("any", "default", "fail")


class SubsetRouter(Router):
    """Route by a request attribute to the instances whose metadata matches; split the rest."""

    def __init__(
        self,
        key: str,
        header: str | None = None,
        *,
        split: Mapping[str, int] | None = None,
        fallback: str = "any",
        default: str | None = None,
    ) -> None:
        _text("SubsetRouter.key", key)
        if header is not None:
            _text("SubsetRouter.header", header)
        if fallback not in FALLBACKS:
            raise ConfigurationError(
                f"SubsetRouter.fallback={fallback!r} is invalid: expected one of {FALLBACKS}"
            )
        if fallback == "default":
            _text("SubsetRouter.default", default)
        elif default is not None:
            raise ConfigurationError(
                f"SubsetRouter.default={default!r} is invalid: a default subset needs "
                "fallback='default'"
            )
        weights = _split(split)
        if header is None and not weights:
            raise ConfigurationError(
                "SubsetRouter needs a header to route by, a split, or both (got neither)"
            )
        self.key = key
        self.header = header
        self.split = weights
        self.fallback = fallback
        self.default = default
        self._cycle = smooth_cycle(weights)

    def __repr__(self) -> str:
        return (
            f"SubsetRouter(key={self.key!r}, header={self.header!r}, split={self.split!r}, "
            f"fallback={self.fallback!r}, default={self.default!r})"
        )

    def prepare(self, usable: Sequence[Endpoint], previous: Routes | None) -> Routes:
        rotation = previous.rotation if isinstance(previous, _Subsets) else None
        if rotation is None and self._cycle:
            rotation = Rotation(self._cycle, random.Random())
        service = usable[0].instance.service if usable else None
        return _Subsets(self, group_by(usable, self.key), rotation, service)


class _Subsets(Routes):
    __slots__ = ("_router", "_service", "groups", "rotation")

    def __init__(
        self,
        router: SubsetRouter,
        groups: dict[Hashable, tuple[Endpoint, ...]],
        rotation: Rotation[str] | None,
        service: str | None,
    ) -> None:
        self._router = router
        self._service = service
        self.groups = groups
        self.rotation = rotation

    def route(self, context: PickContext) -> Hashable | None:
        router = self._router
        wanted = request_header(context, router.header) if router.header is not None else None
        if wanted is None:
            if self.rotation is None:
                return None
            wanted = self.rotation.next()
        if wanted in self.groups:
            return wanted
        if router.fallback == "any":
            return None
        if router.fallback == "default" and router.default in self.groups:
            return router.default
        service = self._service
        subset = f"{router.key}={wanted!r}"
        if router.fallback == "default":
            subset += f" (nor the default subset {router.key}={router.default!r})"
        raise NoAvailableInstance(
            f"no usable instance of {service or 'the service'!r} is in subset {subset}, and "
            f"the subset fallback is {router.fallback!r}",
            service=service,
        )


def _text(setting: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{setting}={value!r} is invalid: expected a non-empty string")


def _split(split: Mapping[str, int] | None) -> dict[str, int]:
    if split is None:
        return {}
    if not isinstance(split, Mapping) or not split:
        raise ConfigurationError(
            f"SubsetRouter.split={split!r} is invalid: expected a mapping of subset value to "
            "integer weight, e.g. {'v1': 95, 'v2': 5}"
        )
    for value, weight in split.items():
        _text("SubsetRouter.split key", value)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 10_000:
            raise ConfigurationError(
                f"SubsetRouter.split[{value!r}]={weight!r} is invalid: expected an integer "
                "weight in [0, 10000]"
            )
    if not any(split.values()):
        raise ConfigurationError(
            f"SubsetRouter.split={dict(split)!r} is invalid: at least one weight must be above 0"
        )
    return dict(split)
