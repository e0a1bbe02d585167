"""Deregister at interpreter exit and on SIGTERM, without swallowing the signal.

On SIGTERM the hook runs its cleanup, then hands the signal on: to the handler that was
installed before it, or, if that was the default, by restoring the default and sending
SIGTERM again so the process still dies with the status a supervisor expects.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("lbclient.consul")


class ExitHook:
    """Run ``cleanup`` once: at exit, on SIGTERM (if installable), or never after ``remove``."""

    def __init__(self, cleanup: Callable[[], None], *, sigterm: bool = True) -> None:
        self._cleanup = cleanup
        self._done = threading.Event()
        self._previous: Any = None
        self._installed = False
        atexit.register(self.run)
        if sigterm and threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True

    def run(self) -> None:
        if self._done.is_set():
            return
        self._done.set()
        try:
            self._cleanup()
        except Exception:
            log.exception("deregistration at exit failed")

    def remove(self) -> None:
        """Stop watching for exit; restore the previous SIGTERM handler if ours is on top."""
        self._done.set()
        atexit.unregister(self.run)
        if (
            self._installed
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == self._on_sigterm
        ):
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.run()
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        # SIG_IGN: the application chose to ignore SIGTERM; so do we
