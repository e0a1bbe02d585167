"""What can be dialled: host and port validation, and the one encoded form of an address.

An instance's host is an IP literal (v4, or v6 with an optional zone id) or a DNS name: labels
of letters, digits, ``-`` and ``_`` (SRV-style and container names use it), at most 63 ASCII
characters each and 253 in all once IDNA-encoded (httpx encodes non-ASCII names the same way,
with ``idna.encode`` of the lower-cased name). A name whose last label is all digits must be a
valid IPv4 address (``010.0.0.1`` and ``1.2.3.999`` are refused, as httpx refuses them).
Anything else (spaces, ``/``, ``@``, CR/LF, NUL, ``host:80:90``) could never be dialled and
would fail every request routed to it, so it is refused where it enters.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import idna

MAX_HOST_LENGTH = 253
"""The longest DNS name (RFC 1035), counted in its ASCII (IDNA) form, without a final dot."""

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
_DIGITS = re.compile(r"[0-9]+\Z")


def show(value: object, limit: int = 80) -> str:
    """``repr(value)``, truncated: hostile values can be 100k characters long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


@functools.lru_cache(maxsize=4096)
def ascii_host(host: str) -> str:
    """The dialable ASCII form of ``host`` (IP literal compressed, name IDNA-encoded and
    lower-cased), or ValueError saying what is wrong with it. Cached: registries send the
    same hosts in answer after answer."""
    if not host:
        raise ValueError("it is empty")
    if len(host) > 4 * MAX_HOST_LENGTH:
        raise ValueError(f"it is {len(host)} characters long (at most {MAX_HOST_LENGTH})")
    if ":" in host:
        zone = host.partition("%")[2]
        if "%" in host and not _ZONE.match(zone):
            raise ValueError(f"IPv6 zone id {show(zone, 40)} is not letters, digits, '.-_'")
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError("it is neither an IPv6 address nor a DNS name (no ':')") from None
    name = host[:-1] if host.endswith(".") else host
    if name.isascii():
        name = name.lower()
    else:
        try:
            name = idna.encode(name.lower()).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"it is not a valid internationalized name ({exc})") from None
    if len(name) > MAX_HOST_LENGTH:
        raise ValueError(f"it is {len(name)} characters long (at most {MAX_HOST_LENGTH})")
    labels = name.split(".")
    if _DIGITS.match(labels[-1]):
        try:
            text = str(ipaddress.IPv4Address(name))
        except ValueError:
            raise ValueError("it looks like an IPv4 address but is not a valid one") from None
        return host if text == host else text  # the caller's string: one copy per instance
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(
                f"label {show(label, 40)} is not 1-63 letters, digits, '-' or '_' "
                "(not starting or ending with '-')"
            )
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise ValueError(f"label {label!r} is not valid punycode") from None
    return host if name == host else name  # the caller's string: one copy per instance


def parse_port(value: object) -> int:
    """A port from an int or a string of ASCII digits, 1-65535; ValueError otherwise.

    ``str.isdigit`` would take ``"٨٠"`` (Arabic-Indic digits) for 80: only ASCII is a port.
    """
    if isinstance(value, str) and 0 < len(value) <= 5 and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("it is not an integer (or a string of ASCII digits)")
    if not 0 < value < 65536:
        raise ValueError("it is out of range (1-65535)")
    return value


def authority(host: str, port: int) -> str:
    """``host:port`` with an IPv6 host in brackets, from an already encoded host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
