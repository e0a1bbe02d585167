"""Real DNS servers for tests and demos: dnsmasq with generated records, and a SERVFAIL stub.

``DnsmasqServer`` runs Debian's ``dnsmasq`` (``apt-get install dnsmasq``) in the foreground
on ``127.0.0.1:<random port>``. SRV and A/AAAA records come from a generated config file
(changing them needs ``restart()``: dnsmasq's SIGHUP re-reads hosts files, not its
configuration); plain name → address records can also live in an ``--addn-hosts`` file,
which ``reload()`` (SIGHUP) re-reads without a restart.

>>> with DnsmasqServer(srv={"_http._tcp.orders.example": [("a.example", 8001, 10, 5)]},
...                    hosts={"a.example": ["127.0.0.1"]}) as dns:     # doctest: +SKIP
...     registry = DnsSrvRegistry("_http._tcp.{service}.example", nameservers=[dns.address])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.nameserver
import dns.query
import dns.rcode

from lbclient import ConfigurationError

SrvRecord = tuple[str, int, int, int]
"""(target, port, priority, weight)"""


def _free_udp_port() -> int:
    """A port free for both UDP and TCP on loopback (dnsmasq listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP+TCP port pair on 127.0.0.1")


INSTALL_HINT = "Debian: apt-get install dnsmasq"


def dnsmasq_binary(name: str = "dnsmasq") -> str | None:
    """dnsmasq on PATH or in the sbin directories a non-root PATH often lacks; else None."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None
    )


class DnsmasqServer:
    """dnsmasq on loopback answering only from its own records (no upstream, no /etc/hosts).

    ``local_domains`` answer NXDOMAIN for unknown names; ``forward`` maps a domain to an
    upstream ``"address#port"`` (a dead one gives timeouts, a ServfailServer SERVFAIL).
    ``ttl`` is the TTL of every answer (dnsmasq's ``--local-ttl``).
    """

    def __init__(
        self,
        *,
        srv: Mapping[str, Sequence[SrvRecord]] | None = None,
        hosts: Mapping[str, Sequence[str]] | None = None,
        addn_hosts: Mapping[str, Sequence[str]] | None = None,
        local_domains: Sequence[str] = ("example",),
        forward: Mapping[str, str] | None = None,
        ttl: int = 1,
        binary: str = "dnsmasq",
    ) -> None:
        found = dnsmasq_binary(binary)
        if found is None:
            raise ConfigurationError(f"{binary!r} not found; install it: {INSTALL_HINT}")
        self.binary = found
        self.srv = dict(srv or {})
        self.hosts = dict(hosts or {})
        self.local_domains = tuple(local_domains)
        self.forward = dict(forward or {})
        self.ttl = ttl
        self._tmp = tempfile.TemporaryDirectory(prefix="lbclient-dnsmasq-")
        self.dir = Path(self._tmp.name)
        self.dir.chmod(0o755)  # dnsmasq drops to "nobody" before re-reading files on SIGHUP
        self.port = _free_udp_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.write_addn_hosts(addn_hosts or {})

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, the form the registries' ``nameservers`` take."""
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = []
        for name, records in self.srv.items():
            for target, port, priority, weight in records:
                lines.append(f"srv-host={name},{target},{port},{priority},{weight}")
        for name, addresses in self.hosts.items():
            lines.append(f"host-record={name},{','.join(addresses)}")
        lines += [f"local=/{d}/" for d in self.local_domains]
        lines += [f"server=/{d}/{upstream}" for d, upstream in self.forward.items()]
        return "\n".join(lines) + "\n"

    def write_addn_hosts(self, hosts: Mapping[str, Sequence[str]]) -> None:
        """Rewrite the ``--addn-hosts`` file; call ``reload()`` to make dnsmasq read it."""
        path = self.dir / "hosts"
        path.write_text("".join(f"{a} {n}\n" for n, addrs in hosts.items() for a in addrs))
        path.chmod(0o644)

    def start(self, timeout: float = 10.0) -> DnsmasqServer:
        if self.process is not None:
            return self
        conf = self.dir / "dnsmasq.conf"
        conf.write_text(self._config())
        conf.chmod(0o644)
        args = [
            self.binary,
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--conf-file={conf}",
            f"--addn-hosts={self.dir / 'hosts'}",
            f"--local-ttl={self.ttl}",
            f"--auth-ttl={self.ttl}",
            f"--pid-file={self.dir / 'dnsmasq.pid'}",
            "--cache-size=0",
        ]
        log = open(self.dir / "dnsmasq.log", "ab")  # noqa: SIM115 -- handed to the process
        try:
            self.process = subprocess.Popen(args, stdout=log, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dnsmasq exited with {self.process.returncode}: {self.log()}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"dnsmasq did not answer within {timeout}s: {self.log()}")

    def _answers(self) -> bool:
        query = dns.message.make_query("ready.invalid.", "A")
        try:
            dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        return True

    def log(self) -> str:
        path = self.dir / "dnsmasq.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def reload(self) -> None:
        """SIGHUP: dnsmasq re-reads the addn-hosts file (not SRV records or the config)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start on the same port with the current ``srv``/``hosts`` records."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> DnsmasqServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServfailServer:
    """A UDP DNS server on loopback that answers SERVFAIL to every query (a broken upstream)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="servfail-dns", daemon=True)

    @property
    def upstream(self) -> str:
        """The ``address#port`` form of dnsmasq's ``--server``."""
        return f"127.0.0.1#{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(dns.exception.DNSException, OSError):
                response = dns.message.make_response(dns.message.from_wire(data))
                response.set_rcode(dns.rcode.SERVFAIL)
                self._sock.sendto(response.to_wire(), peer)
                self.queries += 1

    def __enter__(self) -> ServfailServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
