"""What the sync and async httpx transports share: routing, rewriting, classifying, deciding.

Nothing here does I/O. The two transports (``_sync.py``, ``_async.py``) are thin loops that
send, sleep and close around these functions, so their behaviour cannot drift apart.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx

from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._context import PickContext
from lbclient._exceptions import (
    ConfigurationError,
    DeadlineExceeded,
    LBError,
    SchemeDowngradeRefused,
)
from lbclient._handle import PickHandle
from lbclient._hedge import HedgePolicy, Hedging, check_hedge
from lbclient._outcome import Failure, failure_for_status
from lbclient._retry import RetryPolicy, RetryState, parse_retry_after, positive_seconds

KeySource = Callable[[httpx.Request], "str | bytes | None"]

log = logging.getLogger("lbclient")

DEFAULT_KEY_EXTENSION = "lb_key"
"""``client.get(url, extensions={"lb_key": "user-42"})`` routes by that key."""

TIMEOUT_EXTENSION = "lb_timeout"
"""``client.get(url, extensions={"lb_timeout": 2.0})``: this call's deadline, in seconds
(overrides ``RetryPolicy.timeout``; None: no deadline)."""


class RetryAttempt(Exception):
    """Internal signal to the retry loop: this attempt failed; pause, then try again."""

    def __init__(self, pause: float) -> None:
        super().__init__(pause)
        self.pause = pause


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
        allow_scheme_downgrade: bool = False,
        hedge: HedgePolicy | None = None,
    ) -> None:
        if unknown_service not in ("raise", "passthrough"):
            raise ConfigurationError(
                f"unknown_service must be 'raise' or 'passthrough', got {unknown_service!r}"
            )
        if not isinstance(allow_scheme_downgrade, bool):
            raise ConfigurationError(
                f"allow_scheme_downgrade must be True or False, got {allow_scheme_downgrade!r}"
            )
        self.allow_scheme_downgrade = allow_scheme_downgrade
        self.hedge = check_hedge(hedge)
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
        configs = [lb.defaults, *(lb.config_for(name) for name in lb.configured_services)]
        self._sets_cookies = any(c.sticky_set_cookie for c in configs)

    def start(self, request: httpx.Request, state: ServiceState, started: float) -> RetryState:
        """The state of one balanced call: its policy, pick context and deadline (counted
        from ``started``, the ``time.monotonic()`` at which the transport got the request)."""
        if request.url.port is not None:
            raise ConfigurationError(
                f"{request.url}: a port in a balanced service URL is refused, because each "
                "instance's port comes from the registry (write "
                f"{request.url.scheme}://{request.url.host}/...; a URL to one address "
                "goes out unchanged with unknown_service='passthrough' when its host is "
                "not a service)",
                service=request.url.host,
            )
        policy = self.retry or state.config.retry
        key = self.key(request)
        zone = state.config.zone
        ignores = _IGNORES_ATTRIBUTES.get(type(state.scheduler))
        if ignores is None:
            ignores = _ignores_attributes(state.scheduler)
        if key is None and ignores and not state.listeners_read_requests:
            # Nothing can see this request's attributes: share one context per zone.
            context = self._bare_contexts.get(zone)
            if context is None:
                context = self._bare_contexts[zone] = PickContext(source=self.source, zone=zone)
        else:
            context = PickContext(
                key=key, source=self.source, zone=zone, attributes={"request": request}
            )
        replayable = isinstance(request.stream, httpx.ByteStream)
        timeout = policy.timeout
        if TIMEOUT_EXTENSION in request.extensions:
            timeout = request.extensions[TIMEOUT_EXTENSION]
            if timeout is not None and not positive_seconds(timeout):
                raise ConfigurationError(
                    f'extensions["{TIMEOUT_EXTENSION}"] must be a finite number of seconds > 0 '
                    f"or None, got {timeout!r}",
                    service=request.url.host,
                )
        return RetryState(
            policy,
            state.retry_budget,
            method=request.method,
            replayable=replayable,
            context=context,
            deadline=None if timeout is None else started + timeout,
        )

    def hedging(self, state: ServiceState, retry: RetryState) -> Hedging | None:
        """The hedging of this request, or None when it is not hedged: no policy (the
        transport's, else the service's), a method the retry policy may not resend, or a
        body that cannot be replayed (a stream)."""
        policy = self.hedge or state.config.hedge
        if policy is None or not retry.replayable or not retry.policy.retries_method(retry.method):
            return None
        hedging = state.hedges.get(policy)
        hedging.start()
        return hedging

    def pick(self, request: httpx.Request, state: ServiceState, retry: RetryState) -> PickHandle:
        if retry.deadline is not None and retry.expired():
            raise self.deadline_exceeded(request, retry)
        handle = state.pick(retry.next_context(), retry.attempt, retry.ticket)
        retry.record(handle.instance.id)
        return handle

    def attempt(
        self, request: httpx.Request, handle: PickHandle, retry: RetryState
    ) -> httpx.Request:
        """The request to send to the picked instance, or an ``LBError`` refusing it.

        A registry may upgrade ``http`` to ``https`` but not downgrade the caller's
        ``https://``: the request would go in clear, ``Authorization`` header included.
        The attempt's end (deadline, per-try timeout) caps httpx's timeouts.
        """
        instance = handle.instance
        if (
            instance.scheme == "http"
            and request.url.raw_scheme == b"https"
            and not self.allow_scheme_downgrade
        ):
            raise SchemeDowngradeRefused(
                f"{request.url.host}: the registry lists instance {instance.address} "
                f"(id {instance.id!r}) as plain http, but the request was written as "
                "https://, so it was not sent (it would carry its headers, Authorization "
                "included, in clear). Fix the registry entry, or pass "
                "allow_scheme_downgrade=True to the transport to send it over http",
                service=request.url.host,
                instance=instance,
            )
        prepared = self.prepare(request, handle)
        end = (
            retry.attempt_end()
            if retry.deadline is not None or retry.policy.per_try_timeout is not None
            else None
        )
        if end is not None:
            timeouts = prepared.extensions.get("timeout") or {}
            prepared.extensions["timeout"] = AttemptTimeouts(timeouts, end)
        return prepared

    def prepare(self, request: httpx.Request, handle: PickHandle) -> httpx.Request:
        """The request as sent to the picked instance: URL, Host header and TLS name rewritten."""
        instance = handle.instance
        scheme = instance.scheme if instance.scheme in ("http", "https") else scheme_of(request.url)
        origin = self._origins.get(scheme, instance.ascii_host, instance.port)
        if self.host_header == "instance":
            host: bytes | None = origin.address
        elif self.host_header == "service":
            host = None
        else:
            host = self._host_header
        prepared = _copy_request(request, origin.rewrite(request.url), host)
        if scheme == "https":
            if self.tls_server_name == "service":
                prepared.extensions["sni_hostname"] = request.url.raw_host.decode("ascii")
            elif self.tls_server_name != "instance":
                prepared.extensions["sni_hostname"] = self.tls_server_name
        return prepared

    def on_error(
        self,
        request: httpx.Request,
        handle: PickHandle,
        retry: RetryState,
        exc: httpx.TransportError,
    ) -> Exception | None:
        """Report a transport error; return what to raise instead (a ``RetryAttempt``, or
        ``DeadlineExceeded`` when the deadline cut the attempt), or None to re-raise it."""
        failure, sent, retryable = classify(exc)
        handle.done(failure)
        if isinstance(exc, httpx.TimeoutException) and retry.expired():
            return self.deadline_exceeded(request, retry)
        allowed = retryable and (not sent or retry.policy.retries_method(retry.method))
        pause = retry.pause(allowed)
        handle.state.retried(
            retry.attempt, failure, granted=pause is not None, refused=retry.refused
        )
        if pause is not None:
            return RetryAttempt(pause)
        exc.add_note(f"lbclient: {handle.service}: {retry.describe()}")
        return None

    def on_response(
        self, handle: PickHandle, retry: RetryState, response: httpx.Response
    ) -> float | None:
        """The pause before retrying this answer elsewhere (the caller then drops it), or
        None to return it. A retried answer's ``Retry-After`` sets the pause."""
        if self._sets_cookies:
            set_sticky_cookie(handle, response)
        status = response.status_code
        if status not in retry.policy.statuses:
            return None
        if retry.expired():  # came after the deadline (a transport that ignores timeouts)
            return None
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        pause = retry.pause(retry.policy.retries_method(retry.method), retry_after)
        failure = failure_for_status(status)  # None: a retried status such as 429
        handle.state.retried(
            retry.attempt, failure, granted=pause is not None, refused=retry.refused
        )
        if pause is not None:
            handle.done(failure, status=status)
        return pause

    def deadline_exceeded(self, request: httpx.Request, retry: RetryState) -> DeadlineExceeded:
        service = request.url.host
        exc = DeadlineExceeded(
            f"{service}: the call's deadline passed after {retry.describe()}", service=service
        )
        exc.request = request
        exc.add_note(f"lbclient: {service}: {retry.describe()}")
        return exc

    @staticmethod
    def as_sent(request: httpx.Request, prepared: httpx.Request) -> httpx.Request:
        """The caller's request as its response reports it: the URL the caller wrote, with
        the scheme really used when the registry changed it, so ``https`` never hides a
        plaintext exchange and an upgrade shows. Changed in place, because httpx's clients
        set ``response.request`` to the request object they passed to the transport."""
        if _FAST_MODELS:
            if prepared.url._uri_reference.scheme == request.url._uri_reference.scheme:
                return request
        elif prepared.url.scheme == request.url.scheme:
            return request
        request.url = request.url.copy_with(scheme=prepared.url.scheme)
        return request


def set_sticky_cookie(handle: PickHandle, response: httpx.Response) -> None:
    """Spring's ``add-service-instance-cookie``: name the chosen instance in the service's
    ``sticky_cookie`` on the response, so the client's cookie jar sends it back next time."""
    config = handle.state.config
    if config.sticky_set_cookie and config.sticky_cookie is not None:
        cookie = f"{config.sticky_cookie}={handle.instance.id}; Path=/"
        response.headers = httpx.Headers([*response.headers.multi_items(), ("set-cookie", cookie)])


class AttemptTimeouts(dict[str, float | None]):
    """httpx's timeouts (connect, read, write, pool), each capped when read at the time left
    before the attempt's end.

    httpcore reads each timeout as a phase starts (wait for a connection, connect, send,
    wait for the answer, read the body), so every phase that waits ends by the deadline: an
    attempt is cut there even when it connected at once and then waited (a black-holed
    instance). Only a server that trickles bytes can keep one phase going past it: each wait
    for more bytes is capped at the time that was left when the phase began. The async
    transport also cancels the attempt at its end, which closes that gap there.
    """

    __slots__ = ("end",)

    def __init__(self, timeouts: dict[str, float | None], end: float) -> None:
        super().__init__(timeouts)
        self.end = end

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key, default)
        left = max(self.end - time.monotonic(), 0.001)  # 0 would mean non-blocking
        return left if value is None or value > left else value


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
        """``ServiceInstance.address`` (the Host header, built from ``ascii_host``: never raw
        UTF-8), encoded as ``Headers`` would."""

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


def scheme_of(url: httpx.URL) -> str:
    """``url.scheme``, read from the parsed URL on the fast path (the property costs ten
    times as much, and the request path asks up to three times)."""
    scheme: str = url._uri_reference.scheme if _FAST_MODELS else url.scheme
    return scheme


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
    """Completes a handle when the response body is closed, so in-flight covers the body;
    a body dropped without ``close()`` releases the handle when it is collected.

    The base of the sync and async body wrappers (``_ReleasingStream``): one object per
    response holds the wrapped stream and what to report when it closes.
    """

    __slots__ = ("_stream", "failure", "handle", "status")

    def __init__(self, stream: Any, handle: PickHandle, status: int) -> None:
        self._stream = stream
        self.handle = handle
        self.status = status
        self.failure = None if status < 500 else failure_for_status(status)

    def broken(self, exc: BaseException) -> None:
        if isinstance(exc, httpx.TransportError):
            self.failure = classify(exc)[0]

    def __del__(self) -> None:
        # The response was dropped without close(): give its in-flight slot back. Only as a
        # cancellation: nobody read the body to its end, so the instance is not judged.
        handle: PickHandle | None = getattr(self, "handle", None)
        if handle is not None and not handle.finished:
            try:
                handle.cancel()
            except Exception:  # nobody to raise to from a collection
                log.exception("releasing the slot of a dropped response failed")


def attempt_end(prepared: httpx.Request) -> float | None:
    """When the attempt sending ``prepared`` must end (``time.monotonic()``), or None."""
    timeouts = prepared.extensions.get("timeout")
    return timeouts.end if isinstance(timeouts, AttemptTimeouts) else None


def abandon(handle: PickHandle, exc: BaseException) -> None:
    """Release the handle of an attempt interrupted by something other than httpx; our own
    refusals (an ``LBError`` raised before sending) do not count against the instance."""
    if isinstance(exc, LBError):
        handle.cancel()
    else:
        handle.__exit__(type(exc), exc, None)
