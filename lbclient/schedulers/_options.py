"""Validation of scheduler options: a bad value is a ConfigurationError naming the option.

``check_options`` runs when the configuration is given (``LoadBalancer(...,
scheduler_options=...)``), not at the first pick: unknown names get a did-you-mean, and the
values are checked by building the scheduler once over a placeholder instance. That runs the
very checks every rebuild runs, so the two can never disagree; the sizes the checks allow are
bounded, so that trial build is as cheap as any rebuild.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

from lbclient._exceptions import ConfigurationError
from lbclient._validate import check_names, integer, invalid, mapping, number

if TYPE_CHECKING:
    from lbclient.schedulers._base import Scheduler

MAX_COUNT = 1 << 20
"""The largest count or size option any built-in scheduler accepts unless it says otherwise."""

MAX_PRIME_TABLE = 1_000_003
"""Maglev's largest table. Envoy allows 5,000,011, but building one in Python takes about a
second per million slots (at every change of the list), so a larger one is a mistake here."""

_NOT_OPTIONS = frozenset({"self", "endpoints", "rng", "previous"})


def _setting(scheduler: str, option: str) -> str:
    return f"scheduler {scheduler!r} option {option}"


def int_option(
    scheduler: str, option: str, value: Any, *, minimum: int, maximum: int = MAX_COUNT
) -> int:
    """An integer in ``[minimum, maximum]`` (bools are refused: ``True`` is not a count)."""
    return integer(_setting(scheduler, option), value, minimum=minimum, maximum=maximum)


def float_option(
    scheduler: str, option: str, value: Any, *, minimum: float = 0.0, maximum: float = 1e9
) -> float:
    """A finite number in ``[minimum, maximum]``."""
    return number(_setting(scheduler, option), value, minimum=minimum, maximum=maximum)


def prime_option(scheduler: str, option: str, value: Any, *, maximum: int = MAX_PRIME_TABLE) -> int:
    """A prime number (Maglev's table size), so every skip visits every slot."""
    size = int_option(scheduler, option, value, minimum=2, maximum=maximum)
    if any(size % d == 0 for d in range(2, math.isqrt(size) + 1)):
        raise invalid(
            _setting(scheduler, option),
            value,
            f"a prime number up to {maximum} (e.g. 65537, 5003, 251)",
        )
    return size


def accepted_options(cls: type[Scheduler]) -> frozenset[str]:
    """The option names ``cls`` and its bases take as keyword parameters."""
    from lbclient.schedulers._base import Scheduler

    names: set[str] = set()
    for klass in cls.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, Scheduler)):
            continue
        init = vars(klass).get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                names.add(parameter.name)
    return frozenset(names - _NOT_OPTIONS)


def check_options(cls: type[Scheduler], options: object) -> dict[str, Any]:
    """``options`` for ``cls``, checked now: names known, values accepted by a trial build."""
    given: Mapping[Any, Any] = mapping(
        "scheduler_options", options, example="{'table_size': 5003} or {}"
    )
    check_names(given, accepted_options(cls), what=f"{cls.name} option")
    try:
        # With the types: 1, 1.0 and True are equal keys, and only 1 may be a valid count.
        key: Hashable = (cls, frozenset((k, type(v), v) for k, v in given.items()))
        hash(key)
    except TypeError:
        key = None  # an unhashable value: check it every time
    if key is None or key not in _ACCEPTED:
        _trial_build(cls, given)
        if key is not None:
            if len(_ACCEPTED) >= 256:
                _ACCEPTED.clear()
            _ACCEPTED.add(key)
    return dict(given)


_ACCEPTED: set[Hashable] = set()
"""(class, options) already built once: a maglev trial costs a table build (~30 ms for the
default 65,537 slots), and every service override and every balancer repeats the same few."""


def _trial_build(cls: type[Scheduler], options: Mapping[str, Any]) -> None:
    from lbclient._endpoint import Endpoint
    from lbclient._instance import ServiceInstance

    placeholder = Endpoint(ServiceInstance("placeholder", "127.0.0.1", 1))
    try:
        cls([placeholder], rng=random.Random(0), **options)
    except ConfigurationError:
        raise
    except (TypeError, ValueError, ArithmeticError, MemoryError, RecursionError) as exc:
        raise ConfigurationError(
            f"scheduler {cls.name!r} refused scheduler_options={dict(options)!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
