"""Stable hashing shared by the key-based schedulers.

Every client of a service must map a key to the same instance, so nothing here may depend on
the process (``hash()`` is salted per process): keys and instance ids go through blake2b from
hashlib, and derived values through the splitmix64 finalizer, which is cheap pure arithmetic.
"""

from __future__ import annotations

from hashlib import blake2b

MASK64 = (1 << 64) - 1


def key_bytes(key: str | bytes) -> bytes:
    """The bytes a key hashes as: str keys as UTF-8, so ``"a"`` and ``b"a"`` agree."""
    return key.encode("utf-8", "surrogatepass") if isinstance(key, str) else bytes(key)


def hash64(data: str | bytes) -> int:
    """A stable, well-mixed 64-bit hash of ``data``."""
    return int.from_bytes(blake2b(key_bytes(data), digest_size=8).digest(), "big")


def hash128(data: str | bytes) -> tuple[int, int]:
    """Two independent stable 64-bit hashes of ``data`` (Maglev's offset and skip)."""
    digest = blake2b(key_bytes(data), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")


def mix64(value: int) -> int:
    """splitmix64's finalizer: spreads a combination of two hashes over 64 bits."""
    z = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)
