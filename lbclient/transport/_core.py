"""What the sync and async httpx transports share: routing, rewriting, classifying, deciding.

Nothing here does I/O. The two transports (``_sync.py``, ``_async.py``) are thin loops that
send, sleep and close around these functions, so their behaviour cannot drift apart.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Literal

import httpx
from tenacity import retry_if_exception_type, stop_never

from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._context import PickContext
from lbclient._exceptions import ConfigurationError
from lbclient._handle import PickHandle
from lbclient._outcome import Failure, failure_for_status
from lbclient._retry import RetryPolicy, RetryState

KeySource = Callable[[httpx.Request], "str | bytes | None"]

DEFAULT_KEY_EXTENSION = "lb_key"
"""``client.get(url, extensions={"lb_key": "user-42"})`` routes by that key."""


class RetryAttempt(Exception):
    """Internal signal to the retry loop: this attempt failed and another is allowed."""


def key_from_header(name: str) -> KeySource:
    """Hash key taken from a request header (e.g. ``X-User-Id``)."""
    return lambda request: request.headers.get(name)


def key_from_cookie(name: str) -> KeySource:
    """Hash key taken from a cookie sent with the request (e.g. a session id)."""

    def source(request: httpx.Request) -> str | None:
        for header in request.headers.get_list("cookie"):
            for part in header.split(";"):
                key, _, value = part.strip().partition("=")
                if key == name:
                    return value
        return None

    return source


def key_from_extension(name: str = DEFAULT_KEY_EXTENSION) -> KeySource:
    """Hash key taken from ``request.extensions[name]`` (set per request by the caller)."""
    return lambda request: request.extensions.get(name)


_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_AFTER_SEND_ERRORS = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def classify(exc: httpx.TransportError) -> tuple[Failure, bool, bool]:
    """``(failure kind, whether the request may have reached the instance, retryable)``."""
    if isinstance(exc, _CONNECT_ERRORS):
        kind = Failure.CONNECT if isinstance(exc, httpx.ConnectError) else Failure.TIMEOUT
        return kind, False, True
    if isinstance(exc, httpx.TimeoutException):
        return Failure.TIMEOUT, True, True
    if isinstance(exc, _AFTER_SEND_ERRORS):
        return Failure.RESET, True, True
    return Failure.ERROR, True, False  # our side's problem (protocol misuse, proxy): no retry


class TransportCore:
    """Configuration and decisions of a load-balanced transport (see LoadBalancedTransport)."""

    def __init__(
        self,
        lb: LoadBalancer,
        *,
        retry: RetryPolicy | None = None,
        key: KeySource | None = None,
        source: str | None = None,
        unknown_service: Literal["raise", "passthrough"] = "raise",
        host_header: str = "instance",
        tls_server_name: str = "instance",
    ) -> None:
        if unknown_service not in ("raise", "passthrough"):
            raise ConfigurationError(
                f"unknown_service must be 'raise' or 'passthrough', got {unknown_service!r}"
            )
        self.lb = lb
        self.retry = retry
        self.key = key or key_from_extension()
        self.source = source if source is not None else socket.gethostname()
        self.passthrough = unknown_service == "passthrough"
        self.host_header = host_header
        self.tls_server_name = tls_server_name
        self._host_header = host_header.encode()
        self._origins = _Origins()
        self._bare_contexts: dict[str | None, PickContext] = {}

    def retrying(self, retry: RetryState) -> dict[str, Any]:
        """The tenacity settings of the retry loop (shared by the sync and async twins)."""
        return {
            "retry": retry_if_exception_type(RetryAttempt),
            "stop": stop_never,
            "wait": retry.policy.wait,
            "reraise": True,
        }

    def start(self, request: httpx.Request, state: ServiceState) -> RetryState:
        policy = self.retry or state.config.retry
        key = self.key(request)
        zone = state.config.zone
        ignores = _IGNORES_ATTRIBUTES.get(type(state.scheduler))
        if ignores is None:
            ignores = _ignores_attributes(state.scheduler)
        if key is None and ignores and not state.listeners:
            # Nothing can see this request's attributes: share one context per zone.
            context = self._bare_contexts.get(zone)
            if context is None:
                context = self._bare_contexts[zone] = PickContext(source=self.source, zone=zone)
        else:
            context = PickContext(
                key=key, source=self.source, zone=zone, attributes={"request": request}
            )
        replayable = isinstance(request.stream, httpx.ByteStream)
        return RetryState(
            policy,
            state.retry_budget,
            method=request.method,
            replayable=replayable,
            context=context,
        )

    def pick(self, state: ServiceState, retry: RetryState) -> PickHandle:
        handle = state.pick(retry.next_context(), retry.attempt)
        retry.record(handle.instance.id)
        return handle

    def prepare(self, request: httpx.Request, handle: PickHandle) -> httpx.Request:
        """The request as sent to the picked instance: URL, Host header and TLS name rewritten."""
        instance = handle.instance
        scheme = instance.scheme if instance.scheme in ("http", "https") else request.url.scheme
        origin = self._origins.get(scheme, instance.host, instance.port)
        if self.host_header == "instance":
            host: bytes | None = origin.address
        elif self.host_header == "service":
            host = None
        else:
            host = self._host_header
        prepared = _copy_request(request, origin.rewrite(request.url), host)
        if scheme == "https":
            if self.tls_server_name == "service":
                prepared.extensions["sni_hostname"] = request.url.host
            elif self.tls_server_name != "instance":
                prepared.extensions["sni_hostname"] = self.tls_server_name
        return prepared

    def on_error(
        self, handle: PickHandle, retry: RetryState, exc: httpx.TransportError
    ) -> RetryAttempt | None:
        """Report a transport error; return the retry signal to raise, or None to re-raise."""
        failure, sent, retryable = classify(exc)
        handle.done(failure)
        again = retryable and retry.retry_failure(failure, sent=sent)
        handle.state.retried(retry.attempt, failure, granted=again, refused=retry.refused)
        if again:
            return RetryAttempt()
        exc.add_note(f"lbclient: {handle.service}: {retry.describe()}")
        return None

    def on_response(self, handle: PickHandle, retry: RetryState, status: int) -> bool:
        """True when this response should be dropped and the request retried elsewhere."""
        if status in retry.policy.statuses:
            again = retry.retry_status(status)
            failure = failure_for_status(status)  # None: a retried status such as 429
            handle.state.retried(retry.attempt, failure, granted=again, refused=retry.refused)
            if again:
                handle.done(failure, status=status)
                return True
        return False


def _ignores_attributes(scheduler: object) -> bool:
    """True for lbclient's own schedulers, which read a context's key, source, zone and
    exclusions but never its ``attributes`` (custom schedulers may: they get the request)."""
    cls = type(scheduler)
    known = _IGNORES_ATTRIBUTES[cls] = cls.__module__.startswith("lbclient.schedulers.")
    return known


_IGNORES_ATTRIBUTES: dict[type, bool] = {}
"""``_ignores_attributes`` per scheduler class, looked up first on the request path (no
scheduler yet, None, is not one of ours: a full context is built)."""


class _Origin:
    """One instance's scheme, host and port as httpx parses them, and its Host header value."""

    __slots__ = ("address", "host", "parsed", "port", "scheme")

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        url = httpx.URL(scheme=scheme, host=host, port=port)
        self.parsed: Any = url._uri_reference if _FAST_MODELS else None
        self.address = f"[{host}]:{port}".encode() if ":" in host else f"{host}:{port}".encode()
        """``ServiceInstance.address`` (the Host header), encoded as ``Headers`` would."""

    def rewrite(self, url: httpx.URL) -> httpx.URL:
        """``url.copy_with(scheme=..., host=..., port=...)`` without re-validating ``url``.

        ``copy_with`` re-validates every component (about 30 us, once the largest single cost
        of a balanced request); swapping the pre-parsed origin into the request's
        already-parsed URL gives the same URL.
        """
        if not _FAST_MODELS:
            return url.copy_with(scheme=self.scheme, host=self.host, port=self.port)
        ref = url._uri_reference
        rewritten = httpx.URL.__new__(httpx.URL)
        origin = self.parsed
        rewritten._uri_reference = tuple.__new__(
            _ParseResult, (origin[0], ref[1], origin[2], origin[3], ref[4], ref[5], ref[6])
        )
        return rewritten


class _Origins:
    """The parsed origins of the instances requests went to (a bounded cache)."""

    _LIMIT = 4096

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, str, int], _Origin] = {}

    def get(self, scheme: str, host: str, port: int) -> _Origin:
        key = (scheme, host, port)
        origin = self._parsed.get(key)
        if origin is None:
            if len(self._parsed) >= self._LIMIT:  # instances churned a lot: start over
                self._parsed.clear()
            origin = self._parsed[key] = _Origin(scheme, host, port)
        return origin

    def rewrite(self, url: httpx.URL, scheme: str, host: str, port: int) -> httpx.URL:
        """``url.copy_with(scheme=scheme, host=host, port=port)``, from the cached origin."""
        return self.get(scheme, host, port).rewrite(url)


def _copy_request(request: httpx.Request, url: httpx.URL, host: bytes | None) -> httpx.Request:
    """``httpx.Request(method, url, headers=..., stream=..., extensions=...)``, then
    ``headers["Host"] = host`` unless ``host`` is None, in about a third of the time.

    The constructor and ``Headers.__setitem__`` re-encode and re-scan what is already
    normalized. The fast path builds the same attributes directly; it is used only when
    httpx's models have the shape checked at import (``_fast_models_supported``).
    """
    if not _FAST_MODELS:
        prepared = httpx.Request(
            request.method,
            url,
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        if host is not None:
            prepared.headers["Host"] = host.decode()
        return prepared
    items = request.headers._list
    if host is not None:
        entry: tuple[bytes, bytes, bytes] | None = (b"Host", b"host", host)
        # As Headers.__setitem__: the first Host entry is replaced in place, later ones go.
        replaced = []
        for item in items:
            if item[1] != b"host":
                replaced.append(item)
            elif entry is not None:
                replaced.append(entry)
                entry = None
        if entry is not None:
            replaced.append(entry)
    headers = httpx.Headers.__new__(httpx.Headers)
    headers._list = replaced if host is not None else list(items)
    headers._encoding = None  # as in a copy: worked out again from the bytes when asked
    prepared = httpx.Request.__new__(httpx.Request)
    prepared.method = request.method
    prepared.url = url
    prepared.headers = headers
    prepared.extensions = dict(request.extensions)
    prepared.stream = request.stream
    return prepared


def _fast_models_supported() -> bool:
    """True when httpx's private URL, Headers and Request internals look as the fast paths
    (``_Origin.rewrite``, ``_copy_request``) expect; otherwise the public API is used."""
    try:
        reference: Any = httpx.URL("http://h:1/p")._uri_reference
        fields = ("scheme", "userinfo", "host", "port", "path", "query", "fragment")
        headers: Any = httpx.Headers({"Host": "h"})
        request = httpx.Request("GET", "http://h/", stream=httpx.ByteStream(b""), extensions={})
        return (
            type(reference)._fields == fields
            and headers._list == [(b"Host", b"host", b"h")]
            and vars(httpx.Headers()) == {"_list": [], "_encoding": None}
            and set(vars(request)) == {"method", "url", "headers", "extensions", "stream"}
        )
    except Exception:  # pragma: no cover - a future httpx
        return False


_FAST_MODELS = _fast_models_supported()
_ParseResult: Any = type(httpx.URL("http://h/")._uri_reference) if _FAST_MODELS else None


class Release:
    """Completes a handle when the response body is closed, so in-flight covers the body.

    The base of the sync and async body wrappers (``_ReleasingStream``): one object per
    response holds the wrapped stream and what to report when it closes.
    """

    __slots__ = ("_stream", "failure", "handle", "status")

    def __init__(self, stream: Any, handle: PickHandle, status: int) -> None:
        self._stream = stream
        self.handle = handle
        self.status = status
        self.failure = failure_for_status(status)

    def broken(self, exc: BaseException) -> None:
        if isinstance(exc, httpx.TransportError):
            self.failure = classify(exc)[0]

    def release(self) -> None:
        self.handle.done(self.failure, status=self.status)


def abandon(handle: PickHandle, exc: BaseException) -> None:
    """Release the handle of an attempt interrupted by something other than httpx."""
    handle.__exit__(type(exc), exc, None)
