"""Checks for settings, shared by every constructor that takes them.

A setting is checked where it is given, not where it is first used: a NaN decay, a string
where a collection belongs or a misspelled option must fail at ``LoadBalancer(...)``, not at
the first pick of a request hours later. Every check raises ConfigurationError with the same
shape of message: the setting, the value and what is valid (``RetryPolicy.attempts=nan is
invalid: expected an integer in [1, 100]``), and a misspelled name gets a did-you-mean.

Bools are refused where a number is expected (``True`` is not a count or a duration), and
numbers are finite: NaN compares false with everything, so it slips through ``x <= 0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import itertools
import math
import os
import sys
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

from lbclient._exceptions import ConfigurationError, ConfigurationWarning

T = TypeVar("T")

MIN_SECONDS = 0.001
"""The shortest duration any setting accepts. Intervals drive timers: a heartbeat window or
probe interval of 1e-300 s would spin a thread at full speed."""

MAX_SECONDS = 365 * 86400.0
"""The longest duration any setting accepts (a year). Timers refuse much more than this
(``threading.TIMEOUT_MAX``), and a longer interval is a unit mistake, not a choice."""


def invalid(setting: str, value: object, expected: str) -> ConfigurationError:
    """The one message shape: what was set, to what, and what would be valid."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigurationError(f"{setting}={shown} is invalid: expected {expected}")


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``", did you mean 'ttl'?"`` for the closest valid name, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.65)
    return f", did you mean {close[0]!r}?" if close else ""


def check_names(
    given: Iterable[object], valid: Collection[str], what: str = "setting", where: str = ""
) -> None:
    """Refuse any name in ``given`` that is not in ``valid``, suggesting the closest one.

    ``ConsulRegistrar(..., tll="10s")``: ``unknown setting 'tll', did you mean 'ttl'?``.
    """
    for name in given:
        if name in valid:
            continue
        if not isinstance(name, str):
            raise ConfigurationError(f"{where}{what} names must be strings, got {name!r}")
        raise ConfigurationError(
            f"{where}unknown {what} {name!r}{did_you_mean(name, valid)} "
            f"(valid: {', '.join(sorted(valid)) or 'none'})"
        )


def keyword_settings(cls: type) -> frozenset[str]:
    """The keyword-only parameters of ``cls.__init__``: the valid names for ``check_names``."""
    init = next(vars(k)["__init__"] for k in cls.__mro__ if "__init__" in vars(k))
    parameters = inspect.signature(init).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)


def number(
    setting: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> float:
    """A finite int or float within the bounds (``above`` is an exclusive minimum)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (minimum is not None and value < minimum)
        or (above is not None and value <= above)
        or (maximum is not None and value > maximum)
    ):
        raise invalid(setting, value, _range("a finite number", minimum, maximum, above))
    return float(value)


def integer(setting: str, value: object, *, minimum: int, maximum: int) -> int:
    """An int (not a bool, not 2.5) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise invalid(setting, value, _range("an integer", minimum, maximum, None))
    return value


def seconds(setting: str, value: object, *, minimum: float = MIN_SECONDS) -> float:
    """A duration in seconds: finite, at least ``minimum`` (a millisecond), at most a year."""
    return number(setting, value, minimum=max(minimum, MIN_SECONDS), maximum=MAX_SECONDS)


def optional(check: Callable[..., T], setting: str, value: object, **bounds: Any) -> T | None:
    """``check`` unless ``value`` is None (which then means "off")."""
    return None if value is None else check(setting, value, **bounds)


def flag(setting: str, value: object) -> bool:
    """True or False, not a truthy string ("false" is truthy)."""
    if not isinstance(value, bool):
        raise invalid(setting, value, "True or False")
    return value


def text(setting: str, value: object, *, empty: bool = False) -> str:
    """A string (non-empty unless ``empty``)."""
    if not isinstance(value, str) or (not empty and not value):
        raise invalid(setting, value, "a string" if empty else "a non-empty string")
    return value


def strings(setting: str, value: object, *, example: str = "['a', 'b']") -> tuple[str, ...]:
    """A collection of strings, deduplicated in order. A bare string is refused:
    ``methods="GET"`` would otherwise become ``{"G", "E", "T"}``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise invalid(setting, value, f"a collection of strings, e.g. {example}")
    items = bounded(setting, value)
    bad = [item for item in items if not isinstance(item, str)]
    if bad:
        raise invalid(setting, value, f"a collection of strings, not {bad[0]!r}")
    return tuple(dict.fromkeys(items))  # in the given order, once each


MAX_ITEMS = 10_000
"""The longest collection a setting accepts; ``range(10**12)`` must fail, not hang."""


def bounded(setting: str, value: Iterable[T], limit: int = MAX_ITEMS) -> list[T]:
    """The items of ``value``, refusing more than ``limit`` without reading them all."""
    items = list(itertools.islice(value, limit + 1))
    if len(items) > limit:
        raise invalid(setting, value, f"at most {limit} items")
    return items


def statuses(setting: str, value: object, *, expected: str) -> frozenset[int]:
    """A collection of HTTP statuses (100-599), bounded; a bare string or int is refused."""
    if isinstance(value, (str, bytes, int)) or not isinstance(value, Iterable):
        raise invalid(setting, value, expected)
    items = bounded(setting, value, limit=1000)
    for status in items:
        integer(f"{setting} item", status, minimum=100, maximum=599)
    return frozenset(items)


def mapping(setting: str, value: object, *, example: str = "{'key': 'value'}") -> Mapping[Any, Any]:
    """A mapping (a dict); None and lists are refused."""
    if not isinstance(value, Mapping):
        raise invalid(setting, value, f"a mapping, e.g. {example}")
    return value


def instance_of(setting: str, value: object, kind: type[T], example: str) -> T:
    """An instance of ``kind``; the message shows how to make one."""
    if not isinstance(value, kind):
        raise invalid(setting, value, f"a {kind.__name__}, e.g. {example}")
    return value


def _range(kind: str, minimum: float | None, maximum: float | None, above: float | None) -> str:
    low = f"> {_show(above)}" if above is not None else None
    if minimum is not None:
        low = f">= {_show(minimum)}"
    if low is not None and maximum is not None:
        if minimum is not None:
            return f"{kind} in [{_show(minimum)}, {_show(maximum)}]"
        return f"{kind} {low} and <= {_show(maximum)}"
    if low is not None:
        return f"{kind} {low}"
    if maximum is not None:
        return f"{kind} <= {_show(maximum)}"
    return kind


def _show(bound: float) -> str:
    if isinstance(bound, int) or (bound.is_integer() and abs(bound) < 1e15):
        return str(int(bound))
    return f"{bound:g}"


def warn(message: str) -> None:
    """A ConfigurationWarning pointing at the user's line, not at lbclient's or dataclasses'."""
    frame = sys._getframe(1)
    level = 2  # 1 would be this function
    while frame is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE)
        or frame.f_code.co_filename == dataclasses.__file__
        or (frame.f_code.co_filename == "<string>" and frame.f_code.co_name == "__init__")
    ):  # the last: a dataclass's generated __init__
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, ConfigurationWarning, stacklevel=level)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
