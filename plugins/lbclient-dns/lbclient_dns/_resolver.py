"""The thin I/O edge: run a plan's queries with dnspython, blocking or with asyncio.

Both drivers turn dnspython's answers and exceptions into ``Reply`` values with the same
function, so the plan never sees a library type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.rdtypes.IN.SRV
import dns.resolver

from lbclient import ConfigurationError
from lbclient_dns._plan import Plan, Reply, Resolution, Srv

R = TypeVar("R", bound=dns.resolver.BaseResolver)


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"10.0.0.2"``, ``"10.0.0.2:5353"``, ``"[::1]:5353"`` → (address, port)."""
    text = text.strip()
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "53"
    elif text.count(":") == 1:
        address, _, port = text.partition(":")
    else:
        address, port = text, "53"
    if not address or not port.isdigit():
        raise ConfigurationError(
            f"DNS nameserver {text!r} is not 'address' or 'address:port' (IPv6: '[::1]:53')"
        )
    return address, int(port)


class Resolvers:
    """dnspython resolvers for the configured nameservers (or the system's, by default)."""

    def __init__(self, nameservers: Sequence[str] | None, timeout: float) -> None:
        if timeout <= 0:
            raise ConfigurationError(f"DNS timeout must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        self.nameservers = [parse_nameserver(n) for n in nameservers or ()]
        self.sync: dns.resolver.Resolver = self._configure(dns.resolver.Resolver)
        self.asynchronous: dns.asyncresolver.Resolver = self._configure(dns.asyncresolver.Resolver)

    def _configure(self, kind: type[R]) -> R:
        if self.nameservers:
            resolver = kind(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(a, p) for a, p in self.nameservers
            ]
        else:
            resolver = kind()  # /etc/resolv.conf, with its search list
        resolver.lifetime = self.timeout
        resolver.timeout = min(self.timeout, 2.0)
        return resolver

    @property
    def description(self) -> str:
        if not self.nameservers:
            return "the system resolver"
        return ", ".join(f"{a}#{p}" for a, p in self.nameservers)

    def run(self, plan: Plan) -> Resolution:
        """Drive ``plan`` with blocking queries."""
        try:
            query = next(plan)
            while True:
                try:
                    answer = self.sync.resolve(query.name, query.rdtype, search=True)
                except dns.exception.DNSException as exc:
                    reply = self._failure(exc)
                else:
                    reply = _reply(answer)
                query = plan.send(reply)
        except StopIteration as done:
            result: Resolution = done.value
            return result

    async def arun(self, plan: Plan) -> Resolution:
        """Drive ``plan`` with asyncio queries."""
        try:
            query = next(plan)
            while True:
                try:
                    answer = await self.asynchronous.resolve(query.name, query.rdtype, search=True)
                except dns.exception.DNSException as exc:
                    reply = self._failure(exc)
                else:
                    reply = _reply(answer)
                query = plan.send(reply)
        except StopIteration as done:
            result: Resolution = done.value
            return result

    def _failure(self, exc: dns.exception.DNSException) -> Reply:
        if isinstance(exc, dns.resolver.NXDOMAIN):
            return Reply("nxdomain")
        if isinstance(exc, dns.resolver.NoAnswer):
            return Reply("noanswer")
        if isinstance(exc, dns.exception.Timeout):
            error = f"no answer within {self.timeout:g}s (timeout)"
        elif isinstance(exc, dns.resolver.NoNameservers):
            error = f"the nameservers failed to answer ({_rcodes(exc)})"
        else:
            error = f"{type(exc).__name__}: {exc}"
        return Reply("unavailable", error=error, server=self.description)


def _rcodes(exc: dns.resolver.NoNameservers) -> str:
    """``SERVFAIL`` / ``REFUSED`` from dnspython's error list, not its long message."""
    codes = set()
    for error in exc.kwargs.get("errors", ()):
        # dnspython: (nameserver, tcp, port, exception, response message or None)
        response = error[-1] if isinstance(error, tuple) else None
        if isinstance(response, dns.message.Message):
            codes.add(dns.rcode.to_text(response.rcode()))
        elif isinstance(error, tuple) and len(error) > 3:
            codes.add(str(error[3]))
    return ", ".join(sorted(codes)) or "SERVFAIL"


def _reply(answer: dns.resolver.Answer) -> Reply:
    rrset = answer.rrset
    if rrset is None:
        return Reply("noanswer")
    ttl = float(rrset.ttl)
    if rrset.rdtype == dns.rdatatype.SRV:
        records = tuple(
            Srv(r.priority, r.weight, r.port, r.target.to_text())
            for r in rrset
            if isinstance(r, dns.rdtypes.IN.SRV.SRV)
        )
        return Reply("ok", ttl=ttl, srv=records)
    return Reply("ok", ttl=ttl, addresses=tuple(r.to_text() for r in rrset))
