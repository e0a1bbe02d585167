"""Lifecycle hooks for metrics and tracing (Spring's LoadBalancerLifecycle)."""

from __future__ import annotations

from collections.abc import Sequence

from lbclient._context import PickContext
from lbclient._instance import ServiceInstance
from lbclient._outcome import Outcome


class LoadBalancerListener:
    """Subclass and override what you need; every hook is called synchronously, so keep it short.

    ``on_pick`` and ``on_complete`` run on the request path; ``on_instances`` when a service's
    usable list changes. An exception from a hook is logged and never breaks a request.
    """

    def on_pick(self, service: str, instance: ServiceInstance, context: PickContext) -> None:
        """An attempt is about to go to ``instance``."""

    def on_complete(self, service: str, instance: ServiceInstance, outcome: Outcome) -> None:
        """An attempt on ``instance`` finished (or was cancelled)."""

    def on_instances(self, service: str, usable: Sequence[ServiceInstance]) -> None:
        """The usable list of ``service`` changed."""
