"""Helpers shared by the Kubernetes tests (a unique module name: tests/ is not a package)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

TOKEN = "t0ken-never-logged"
NS = "shop"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    """Wait until ``condition()`` holds; return how long it took (fails the test after timeout).

    The bound is generous on purpose: it only stops a broken test from hanging, it is not a
    speed assertion (speed is printed, and measured in benchmarks/).
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.005)
    return time.monotonic() - start


async def await_for(condition: Callable[[], bool], limit: float = 10.0) -> float:
    """``wait_for`` for async tests (the event loop keeps running while waiting)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > limit:
            raise AssertionError(f"condition not met within {limit}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start
