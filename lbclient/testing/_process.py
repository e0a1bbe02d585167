"""ControlledBackend: one HTTPBackend in its own process, to crash, restart and slow down.

Benchmarks of failover and slow instances need backends that (1) do not share the client's
interpreter lock, (2) die the way a real process dies, every connection reset at once, and
(3) can be slowed down while the client runs. One child process per backend gives all
three: ``kill()`` is a SIGKILL, ``start()`` brings it back on the same port, and
``set_delay()`` talks to the child over its stdin. The child exits when its stdin closes,
so it never outlives the process that started it.

>>> backend = ControlledBackend("a").start()                   # doctest: +SKIP
>>> backend.set_delay(0.1); backend.kill(); backend.start()    # doctest: +SKIP
>>> backend.stop()                                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading

from lbclient.testing._server import stop_child


class ControlledBackend:
    """An HTTPBackend (see lbclient.testing.HTTPBackend) served by a child process."""

    def __init__(
        self, name: str, *, host: str = "127.0.0.1", port: int = 0, delay: float = 0.0
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.delay = delay
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> ControlledBackend:
        """Start the child (again, on the same port after ``kill``); return once it serves."""
        if self._process is not None:
            return self
        config = json.dumps(
            {"name": self.name, "host": self.host, "port": self.port, "delay": self.delay}
        )
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.kill()
            process.wait()
            raise RuntimeError(f"backend {self.name!r} exited before serving (port in use?)")
        self.port = int(line)
        self._process = process
        return self

    def _ask(self, command: str) -> str:
        with self._lock:
            process = self._process
            if process is None or process.stdin is None or process.stdout is None:
                raise RuntimeError(f"backend {self.name!r} is not running")
            process.stdin.write(command + "\n")
            process.stdin.flush()
            return process.stdout.readline().strip()

    def set_delay(self, seconds: float) -> None:
        """Make every answer take ``seconds`` longer (0 for full speed)."""
        self.delay = seconds
        self._ask(f"delay {seconds}")

    def requests(self) -> int:
        """Requests served since this child started (health probes excluded)."""
        return int(self._ask("requests"))

    def kill(self) -> None:
        """Crash it: SIGKILL, so every connection is reset and the port refuses at once."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        _close_pipes(process)

    def stop(self) -> None:
        """Stop it cleanly (the child sees its stdin close); kill it if it hangs."""
        process, self._process = self._process, None
        if process is not None:
            stop_child(process)

    def __enter__(self) -> ControlledBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _close_pipes(process: subprocess.Popen[str]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None and not pipe.closed:
            with contextlib.suppress(OSError):
                pipe.close()


def _child(config_text: str) -> None:
    """Child side: serve, report the port, then obey commands on stdin until it closes."""
    from lbclient.testing._http import HTTPBackend

    config = json.loads(config_text)
    backend = HTTPBackend(
        config["name"], host=config["host"], port=config["port"], delay=config["delay"]
    ).start()
    print(backend.port, flush=True)
    try:
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "delay":
                backend.delay = float(argument)
                print("ok", flush=True)
            elif command == "requests":
                print(backend.requests, flush=True)
            else:
                print(f"unknown command {command!r}", flush=True)
    finally:
        backend.stop()


_CHILD = "import sys; from lbclient.testing._process import _child; _child(sys.argv[1])"
