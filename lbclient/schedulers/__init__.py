"""Schedulers: one algorithm per module, selected by name.

``scheduler_class("peak_ewma")`` returns the class; ``register_scheduler`` adds your own.
Names and aliases (the LVS family: rr, wrr, lc, ...) are listed by ``available_schedulers()``.
"""

from __future__ import annotations

from importlib import import_module

from lbclient._exceptions import ConfigurationError
from lbclient.schedulers._base import Scheduler

_MODULES = (
    "round_robin",
    "random",
    "weighted_round_robin",
    "weighted_random",
    "least_request",
    "peak_ewma",
    "ring_hash",
    "maglev",
    "rendezvous",
    "lc",
    "wlc",
    "sed",
    "nq",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "fo",
    "ovf",
    "twos",
)

_REGISTRY: dict[str, type[Scheduler]] = {}


def register_scheduler(cls: type[Scheduler]) -> type[Scheduler]:
    """Make ``cls`` selectable by its ``name`` and ``aliases`` (usable as a class decorator)."""
    for name in (cls.name, *cls.aliases):
        _REGISTRY[name] = cls
    return cls


def _load_builtins() -> None:
    for module_name in _MODULES:
        module = import_module(f"lbclient.schedulers.{module_name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Scheduler)
                and value.__module__ == module.__name__
                and "name" in vars(value)
            ):
                register_scheduler(value)


def available_schedulers() -> list[str]:
    """Every selectable name, aliases included."""
    if not _REGISTRY:
        _load_builtins()
    return sorted(_REGISTRY)


def scheduler_class(name: str | type[Scheduler]) -> type[Scheduler]:
    """Resolve a scheduler name (or pass a class through); unknown names list the choices."""
    if isinstance(name, type):
        if not issubclass(name, Scheduler):
            raise ConfigurationError(f"{name!r} is not a Scheduler subclass")
        return name
    if not _REGISTRY:
        _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown scheduler {name!r}; choose one of: {', '.join(available_schedulers())}"
        ) from None


__all__ = ["Scheduler", "available_schedulers", "register_scheduler", "scheduler_class"]
