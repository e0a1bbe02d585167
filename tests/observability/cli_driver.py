"""Run the ``lbclient`` command as a real process: on pipes (lines) or in a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import queue
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def environment() -> dict[str, str]:
    """The test's environment, with this checkout of lbclient first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "plugins/lbclient-etcd"), str(ROOT / "plugins/lbclient-dns")]
    )
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    return env


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``lbclient ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "lbclient", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(),
        cwd=ROOT,
        check=False,
    )


class Lines:
    """``lbclient ARGS`` with stdout on a pipe, read line by line in a thread."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lbclient", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
            cwd=ROOT,
        )
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def next_line(self, timeout: float = 30) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output line within {timeout}s") from None

    def until(self, test: Callable[[str], bool], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.1, deadline - time.monotonic()))
            if test(line):
                return line

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C; return the exit code and what went to stderr."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(30)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Terminal:
    """``lbclient ARGS`` in a pseudo-terminal of ``rows`` x ``columns``, as a person runs it."""

    def __init__(self, *args: str, rows: int = 40, columns: int = 200) -> None:
        self._master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = environment()
        env["TERM"] = "xterm-256color"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lbclient", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        os.close(slave)
        self.output = ""
        """Everything the terminal showed, with the escape sequences removed."""
        self._seen = 0

    def _pump(self, wait: float) -> None:
        ready, _, _ = select.select([self._master], [], [], wait)
        if ready:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # the child closed the terminal
                return
            self.output += ANSI.sub("", data.decode(errors="replace"))

    def expect(self, test: Callable[[str], Any], timeout: float = 30) -> str:
        """Wait until ``test`` holds for the output shown since the last ``expect``."""
        deadline = time.monotonic() + timeout
        while not test(self.output[self._seen :]):
            assert time.monotonic() < deadline, f"not shown in {timeout}s:\n{self.output[-3000:]}"
            self._pump(0.1)
        shown = self.output[self._seen :]
        self._seen = len(self.output)
        return shown

    def interrupt(self) -> int:
        """Ctrl-C as the terminal sends it (SIGINT); return the exit code."""
        os.kill(self.process.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while self.process.poll() is None:
            assert time.monotonic() < deadline, "still running 30 s after Ctrl-C"
            self._pump(0.05)
        self._pump(0.2)
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        os.close(self._master)
