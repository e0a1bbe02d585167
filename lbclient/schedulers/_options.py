"""Validation of scheduler options: a bad value is a ConfigurationError naming the option."""

from __future__ import annotations

import math
from typing import Any

from lbclient._exceptions import ConfigurationError


def _fail(scheduler: str, option: str, value: Any, expected: str) -> ConfigurationError:
    return ConfigurationError(
        f"scheduler {scheduler!r}: option {option}={value!r} is invalid; "
        f"it must be {expected} (fix scheduler_options)"
    )


def int_option(scheduler: str, option: str, value: Any, *, minimum: int) -> int:
    """An integer >= ``minimum`` (bools are refused: ``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(scheduler, option, value, f"an integer >= {minimum}")
    return value


def float_option(scheduler: str, option: str, value: Any, *, minimum: float = 0.0) -> float:
    """A finite number >= ``minimum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or math.isinf(value)
        or value < minimum
    ):
        raise _fail(scheduler, option, value, f"a finite number >= {minimum:g}")
    return float(value)


def prime_option(scheduler: str, option: str, value: Any) -> int:
    """A prime number (Maglev's table size), so every skip visits every slot."""
    size = int_option(scheduler, option, value, minimum=2)
    if any(size % d == 0 for d in range(2, math.isqrt(size) + 1)):
        raise _fail(scheduler, option, value, "a prime number (e.g. 65537, 5003, 251)")
    return size
