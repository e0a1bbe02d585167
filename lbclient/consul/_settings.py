"""Where the Consul agent is and how to talk to it: address, TLS, token, datacenter.

Explicit arguments win over the standard environment variables, which win over Consul's
defaults (``127.0.0.1:8500``, plain HTTP): ``CONSUL_HTTP_ADDR`` (``host:port`` or
``https://host:port``), ``CONSUL_HTTP_SSL``, ``CONSUL_HTTP_SSL_VERIFY``, ``CONSUL_HTTP_TOKEN``,
``CONSUL_CACERT``, ``CONSUL_CLIENT_CERT`` and ``CONSUL_CLIENT_KEY``. The token never appears
in a repr, a log line or an exception message.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import consul
import consul.aio

from lbclient import _validate as check
from lbclient._exceptions import ConfigurationError

DEFAULT_TIMEOUT = 10.0
"""Seconds to connect and get an answer, on top of a blocking query's wait."""

Cert = str | tuple[str, str] | None


@dataclasses.dataclass(frozen=True, repr=False)
class ConsulSettings:
    """The resolved connection settings, shared by the registry and the registrar."""

    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"
    token: str | None = None
    verify: bool | str = True
    cert: Cert = None
    dc: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def __repr__(self) -> str:
        token = ", token=<redacted>" if self.token else ""
        dc = f", dc={self.dc!r}" if self.dc else ""
        return f"ConsulSettings({self.scheme}://{self.host}:{self.port}{dc}{token})"

    @property
    def address(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @classmethod
    def resolve(
        cls,
        host: str | None = None,
        port: int | None = None,
        *,
        scheme: str | None = None,
        token: str | None = None,
        verify: bool | str | None = None,
        cert: Cert = None,
        dc: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
    ) -> ConsulSettings:
        """Merge arguments, environment and defaults; raise ConfigurationError on nonsense."""
        check.optional(check.text, "host", host)
        check.optional(check.text, "dc", dc)
        if token is not None and not isinstance(token, str):
            raise ConfigurationError(f"token must be a string, got a {type(token).__name__}")
        timeout = check.seconds("timeout", timeout)
        if verify is not None and not isinstance(verify, (bool, str)):
            raise check.invalid("verify", verify, "True, False or the path of a CA bundle")
        if not (
            cert is None
            or isinstance(cert, str)
            or (
                isinstance(cert, tuple) and len(cert) == 2 and all(isinstance(c, str) for c in cert)
            )
        ):
            raise check.invalid("cert", cert, "a certificate path or a (cert, key) pair of paths")
        env = os.environ if environ is None else environ
        check.mapping("environ", env, example="os.environ")
        addr = env.get("CONSUL_HTTP_ADDR", "").strip()
        env_scheme = None
        if addr and host is None and port is None:
            parts = urlsplit(addr if "//" in addr else "//" + addr)
            try:
                host, port = parts.hostname, parts.port
            except ValueError:
                host = None
            if not host:
                raise ConfigurationError(
                    f"CONSUL_HTTP_ADDR={addr!r} is not host:port or scheme://host:port"
                )
            env_scheme = parts.scheme or None
        ssl = env.get("CONSUL_HTTP_SSL", "").strip().lower()
        if scheme is None:
            scheme = env_scheme or ("https" if ssl in ("1", "true", "t", "yes") else "http")
        if scheme not in ("http", "https"):
            raise ConfigurationError(f"Consul scheme must be 'http' or 'https', got {scheme!r}")
        if verify is None:
            ssl_verify = env.get("CONSUL_HTTP_SSL_VERIFY", "").strip().lower()
            verify = ssl_verify not in ("0", "false", "f", "no")
            if verify and env.get("CONSUL_CACERT"):
                verify = env["CONSUL_CACERT"]
        if cert is None and env.get("CONSUL_CLIENT_CERT"):
            key = env.get("CONSUL_CLIENT_KEY")
            cert = (env["CONSUL_CLIENT_CERT"], key) if key else env["CONSUL_CLIENT_CERT"]
        if token is None:
            token = env.get("CONSUL_HTTP_TOKEN") or None
        port = 8500 if port is None else port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"Consul port must be 1-65535, got {port!r}")
        return cls(
            host=host or "127.0.0.1",
            port=port,
            scheme=scheme,
            token=token,
            verify=verify,
            cert=cert,
            dc=dc or None,
            timeout=timeout,
        )

    def sync_client(self) -> Any:
        """A blocking ``consul.Consul`` (requests)."""
        client = consul.Consul(
            host=self.host,
            port=self.port,
            scheme=self.scheme,
            verify=self.verify,
            cert=self.cert,
            dc=self.dc,
            connections_timeout=self.timeout,
        )
        client.token = self.token  # py-consul lets CONSUL_HTTP_TOKEN override an explicit one
        return client

    def async_client(self, timeout: float | None = None, connections: int | None = None) -> Any:
        """A ``consul.aio.Consul`` (aiohttp); create it inside the loop that will use it.

        ``connections`` caps its pool (aiohttp's default: 100)."""
        with warnings.catch_warnings():
            # py-consul passes aiohttp's deprecated ssl_context argument for https
            warnings.simplefilter("ignore", DeprecationWarning)
            client = consul.aio.Consul(
                host=self.host,
                port=self.port,
                scheme=self.scheme,
                verify=self.verify if self.scheme == "https" else False,
                cert=self.cert,
                dc=self.dc,
                connections_timeout=timeout or self.timeout,
                connections_limit=connections,
            )
        client.token = self.token
        return client


async def close_now(client: Any) -> None:
    """Close a ``consul.aio`` client even from a task being cancelled (twice, as
    ``asyncio.run`` does at exit): ``ClientSession.close()`` is a coroutine that a second
    cancel can stop before it starts, leaving sockets open. The connector's ``close()`` shuts
    every transport synchronously (idle and in-flight alike) and returns what to wait for."""
    session = client.http._session  # py-consul's aiohttp session (no public accessor)
    connector = session.connector
    if connector is not None and not connector.closed:
        await connector.close()
