"""One background event loop for every watch started outside asyncio: O(1) threads.

A blocking caller's watches (Consul blocking queries, Kubernetes watches, the plugins') run
as asyncio tasks on this loop, driven by the very same async poll an asyncio caller's watch
uses, so a gateway watching a thousand services runs one lbclient thread, not a thousand.
The loop starts with the first watch and stops when the last one is released, so a closed
(or collected) balancer leaves no thread behind; the next watch starts a fresh loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar

THREAD_NAME = "lbclient-watch-loop"


class SharedLoop:
    """The process's watch loop, counted by its users (acquire/release pairs)."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _current: ClassVar[SharedLoop | None] = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.users = 0
        self.thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
        self.thread.start()

    @classmethod
    def acquire(cls) -> SharedLoop:
        """The running shared loop (started if none), counted as used until ``release``."""
        with cls._lock:
            current = cls._current
            if current is None:
                current = cls._current = SharedLoop()
            current.users += 1
            return current

    def release(self, timeout: float = 5.0) -> None:
        """One user is done; the last one stops the loop and (off the loop) joins its thread."""
        with SharedLoop._lock:
            self.users -= 1
            if self.users > 0:
                return
            if SharedLoop._current is self:
                SharedLoop._current = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    @classmethod
    def task_names(cls) -> list[str]:
        """The names of the tasks on the shared loop now (none when it is not running)."""
        with cls._lock:
            current = cls._current
        if current is None:
            return []

        async def names() -> list[str]:
            me = asyncio.current_task()
            return sorted(t.get_name() for t in asyncio.all_tasks() if t is not me)

        if current.on_loop:
            return sorted(t.get_name() for t in asyncio.all_tasks(current.loop))
        return asyncio.run_coroutine_threadsafe(names(), current.loop).result(5.0)

    @property
    def on_loop(self) -> bool:
        """True when called from the loop's own thread (where nothing may wait for the loop)."""
        return threading.current_thread() is self.thread

    def _serve(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # As asyncio.run ends: whatever is left is cancelled and allowed to clean up
            # (closing its connections) before the loop closes.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
