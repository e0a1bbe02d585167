"""The thin I/O edge: POST JSON to etcd's gateway, sync or async, failing over between endpoints.

Unary calls share one pooled client (sync) or open a short-lived one per call (async, so
that no client outlives the event loop that made it). Watch streams get a client of their
own, built from a shared SSL context so that building it costs microseconds, not the 25 ms
of loading the CA bundle again.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Sequence

import httpx

from lbclient import ConfigurationError, RegistryUnavailable
from lbclient_etcd._protocol import Json, check

log = logging.getLogger("lbclient.etcd")


class Endpoints:
    """The cluster's client URLs; the one that answered last is tried first."""

    def __init__(self, urls: Sequence[str]) -> None:
        cleaned = [u.rstrip("/") for u in urls if u.strip()]
        if not cleaned:
            raise ConfigurationError("etcd needs at least one endpoint, e.g. http://127.0.0.1:2379")
        for url in cleaned:
            if not url.startswith(("http://", "https://")):
                raise ConfigurationError(
                    f"etcd endpoint {url!r} must start with http:// or https://"
                )
        self.urls = tuple(cleaned)
        self._first = 0

    def order(self) -> list[str]:
        return list(self.urls[self._first :] + self.urls[: self._first])

    def worked(self, url: str) -> None:
        self._first = self.urls.index(url)

    def unreachable(self, what: str, error: BaseException | None) -> RegistryUnavailable:
        return RegistryUnavailable(
            f"etcd {what}: no endpoint answered ({', '.join(self.urls)}): "
            f"{type(error).__name__}: {error}; check that etcd is running and reachable"
        )


class EtcdHTTP:
    """Sends gateway calls; every failure comes out as an lbclient exception."""

    def __init__(
        self, endpoints: Endpoints, *, timeout: float, verify: ssl.SSLContext | str | bool
    ) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._ssl = httpx.create_ssl_context(verify=verify)
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _shared(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = self.client(self.timeout)
            return self._client

    def client(self, read_timeout: float) -> httpx.Client:
        return httpx.Client(verify=self._ssl, timeout=_timeout(self.timeout, read_timeout))

    def async_client(self, read_timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=self._ssl, timeout=_timeout(self.timeout, read_timeout))

    def call(self, path: str, body: Json, what: str) -> Json:
        client, error = self._shared(), None
        for url in self.endpoints.order():
            try:
                response = client.post(url + path, json=body)
            except httpx.TransportError as exc:
                error = exc
                continue
            self.endpoints.worked(url)
            return check(response.status_code, response.content, what)
        raise self.endpoints.unreachable(what, error)

    async def acall(self, path: str, body: Json, what: str) -> Json:
        error = None
        async with self.async_client(self.timeout) as client:
            for url in self.endpoints.order():
                try:
                    response = await client.post(url + path, json=body)
                except httpx.TransportError as exc:
                    error = exc
                    continue
                self.endpoints.worked(url)
                return check(response.status_code, response.content, what)
        raise self.endpoints.unreachable(what, error)

    @contextlib.asynccontextmanager
    async def astream(
        self, path: str, body: Json, what: str, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[Json]]:
        """Open a streaming call and yield its messages; a broken stream just ends them.

        Cancelling the task closes the stream."""
        error: BaseException | None = None
        async with self.async_client(read_timeout) as client:
            for url in self.endpoints.order():
                try:
                    response = await client.send(
                        client.build_request("POST", url + path, json=body), stream=True
                    )
                except httpx.TransportError as exc:
                    error = exc
                    continue
                self.endpoints.worked(url)
                try:
                    if response.status_code != 200:
                        check(response.status_code, await response.aread(), what)
                    yield _amessages(response.aiter_lines(), what)
                finally:
                    await response.aclose()
                return
        raise self.endpoints.unreachable(what, error)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _timeout(connect: float, read: float) -> httpx.Timeout:
    return httpx.Timeout(connect, read=read)


async def _amessages(lines: AsyncIterator[str], what: str) -> AsyncIterator[Json]:
    try:
        async for line in lines:
            if line.strip():
                yield check(200, line.encode(), what)
    except httpx.TransportError as exc:
        log.debug("etcd %s stream ended: %s: %s", what, type(exc).__name__, exc)
