"""Go durations (``"10s"``, ``"1m30s"``, ``"500ms"``): the format Consul uses for every time.

Standard library only: the Consul registry and the Consul test server share it.
"""

from __future__ import annotations

import math
import re

from lbclient._validate import MAX_SECONDS

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration, with Go's rules: a unit is required except for ``"0"``.

    >>> parse_go_duration("1m30s"), parse_go_duration("250ms")
    (90.0, 0.25)

    Raises ValueError on anything Go's ``time.ParseDuration`` would refuse.
    """
    body = text.strip()
    sign = 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r} (expected e.g. '10s', '1m30s', '500ms')")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def format_go_duration(seconds: float) -> str:
    """A Go duration for ``seconds``: ``10.0`` → ``"10s"``, ``0.5`` → ``"500ms"``."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def to_seconds(value: float | str, what: str) -> float:
    """Accept seconds or a Go duration; raise ValueError naming ``what`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected seconds or a Go duration such as '10s', got {value!r}")
    try:
        seconds = float(value) if isinstance(value, (int, float)) else parse_go_duration(value)
    except (ValueError, AttributeError, OverflowError):
        seconds = math.nan
    if not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise ValueError(
            f"{what}: expected seconds (at most a year) or a Go duration such as '10s', "
            f"got {value!r}"
        )
    return seconds
