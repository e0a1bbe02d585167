"""Schedulers: one algorithm per module, selected by name.

``scheduler_class("peak_ewma")`` returns the class; ``register_scheduler`` adds your own.
Names and aliases are listed by ``available_schedulers()``; each module's docstring documents
its behaviour, options and, for key-based ones, the fallback without a key (a random instance).

=====================================  ==================================================
round_robin (rr)                       each in turn, random start, O(1)
weighted_round_robin (wrr)             smooth weighted rotation (EDF schedule), O(1)
random / weighted_random               uniform / by weight (bisect), O(1) / O(log n)
least_request                          power of two choices on in-flight, Envoy-weighted
peak_ewma                              power of two choices on latency x (in-flight + 1)
twos                                   two weighted draws, less loaded per weight wins
lc / wlc / sed / nq                    LVS's exact choice: in-flight, per weight, expected
                                       delay, idle first; a load index from 64 instances
fo / ovf                               heaviest available / heaviest until full
ring_hash / maglev (mh) / rendezvous   consistent hashing of ``PickContext.key`` (rendezvous
                                       is O(n) per new key and caches recent keys)
dh / sh                                bucket table on the key / on ``PickContext.source``
lblc / lblcr                           key remembered on a server / a server set, moved
                                       or grown under overload
=====================================  ==================================================
"""

from __future__ import annotations

from importlib import import_module

from lbclient._exceptions import ConfigurationError
from lbclient._validate import did_you_mean, invalid
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
    if not isinstance(name, str):
        raise invalid("scheduler", name, "a scheduler name such as 'round_robin', or a class")
    if not _REGISTRY:
        _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown scheduler {name!r}{did_you_mean(name, _REGISTRY)}; choose one of: "
            f"{', '.join(available_schedulers())}"
        ) from None


__all__ = ["Scheduler", "available_schedulers", "register_scheduler", "scheduler_class"]
