"""ConsulRegistrar (thread) and AsyncConsulRegistrar (asyncio task): register, heartbeat, leave.

Both are thin drivers around RegistrationCore; the emergency deregistration at exit or on
SIGTERM always uses the blocking client, since no event loop may be running by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Never

from lbclient._exceptions import ConfigurationError
from lbclient._validate import check_names, keyword_settings
from lbclient._validate import flag as check_flag
from lbclient.consul._exit import ExitHook
from lbclient.consul._health import translate
from lbclient.consul._registration import HealthCallback, HealthResult, RegistrationCore
from lbclient.consul._settings import DEFAULT_TIMEOUT, Cert, ConsulSettings, close_now

log = logging.getLogger("lbclient.consul")


class _RegistrarBase:
    def __init__(
        self,
        name: str,
        port: int,
        *,
        service_id: str | None = None,
        address: str | None = None,
        tags: Iterable[str] = (),
        meta: Mapping[str, str] | None = None,
        weights: Mapping[str, int] | None = None,
        ttl: float | str = "10s",
        interval: float | str | None = None,
        deregister_critical_after: float | str | None = "1m",
        health: HealthCallback | None = None,
        handle_sigterm: bool = True,
        host: str | None = None,
        consul_port: int | None = None,
        token: str | None = None,
        scheme: str | None = None,
        verify: bool | str | None = None,
        cert: Cert = None,
        timeout: float = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
        **unknown: Never,
    ) -> None:
        # Explicit keywords, so help() and type checkers see them; ``unknown`` is typed Never
        # so that a type checker rejects a misspelled one, and caught here so that it is a
        # ConfigurationError with a did-you-mean at run time instead of a bare TypeError.
        check_names(unknown, keyword_settings(_RegistrarBase))
        check_flag("handle_sigterm", handle_sigterm)
        self.core = RegistrationCore(
            name, port, service_id=service_id, address=address, tags=tags, meta=meta,
            weights=weights, ttl=ttl, interval=interval,
            deregister_critical_after=deregister_critical_after, health=health,
        )  # fmt: skip
        self.settings = ConsulSettings.resolve(
            host, consul_port, scheme=scheme, token=token, verify=verify, cert=cert,
            timeout=timeout, environ=environ,
        )  # fmt: skip
        self._handle_sigterm = handle_sigterm
        self._hook: ExitHook | None = None
        self._init_driver()

    def _init_driver(self) -> None:
        """Set up what the blocking or asyncio flavour needs (no I/O)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.core.service_id!r} at {self.settings.address}>"

    @property
    def service_id(self) -> str:
        return self.core.service_id

    @property
    def check_id(self) -> str:
        return self.core.check_id

    def _install_hook(self) -> None:
        self._hook = ExitHook(self._deregister_blocking, sigterm=self._handle_sigterm)

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _deregister_blocking(self) -> None:
        """At exit or on SIGTERM: stop re-registering, then leave with the blocking client."""
        self.core.leaving = True
        self._stop_beating()
        client = self.settings.sync_client()
        try:
            client.agent.service.deregister(self.core.service_id)
            log.info("%s: deregistered from Consul", self.core.service_id)
        except Exception as exc:
            log.warning("%s: deregistration failed: %s", self.core.service_id, exc)

    def _stop_beating(self) -> None:
        return None

    def _raise_if_config(self, exc: BaseException) -> None:
        """A refused token or a bad registration is the user's to fix: raise it at start."""
        error = translate(exc, self.core.name, self.settings.address, "service:write")
        if isinstance(error, ConfigurationError):
            raise error from exc
        log.warning(
            "%s: Consul unavailable at start, registering in the background: %s",
            self.core.service_id,
            error,
        )


class ConsulRegistrar(_RegistrarBase):
    """Register this process in Consul with a TTL check and keep it passing from a thread.

    >>> registrar = ConsulRegistrar("orders", port=8001, ttl="10s")   # doctest: +SKIP
    >>> with registrar:                                              # doctest: +SKIP
    ...     serve()

    Every ``interval`` (default ttl/3) the check is reported with the status of ``health()``
    (``"passing"``, ``"warning"``, ``"critical"``, optionally ``(status, note)``; default
    always passing; it runs in the registrar's thread). If the agent answers 404 (it lost the
    service) the service is registered again. ``deregister_critical_after`` (default 1 min,
    Consul's minimum) makes Consul drop it if the process dies without leaving. ``close()``
    (or leaving the ``with`` block) deregisters; so do interpreter exit and SIGTERM
    (``handle_sigterm``), after which the signal goes on to the previous handler.
    ``service_id`` defaults to ``<name>-<hostname>-<port>``. The agent is found with
    ``host``/``consul_port``/``scheme``/``verify``/``cert``/``token`` or ``CONSUL_HTTP_*``.
    """

    def _init_driver(self) -> None:
        self._client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ConsulRegistrar:
        """Register (raising RegistryAccessDenied/ConfigurationError at once), then heartbeat."""
        if self._thread is not None:
            return self
        self._client = self.settings.sync_client()
        try:
            self._register(*self._health())
        except Exception as exc:
            try:
                self._raise_if_config(exc)
            except ConfigurationError:
                self._client.http.session.close()
                raise
        self._install_hook()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"lbclient-registrar-{self.core.service_id}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        delay = self.core.interval
        while not self._stop.wait(delay):
            delay = self.beat()

    def _stop_beating(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.settings.timeout)

    def beat(self) -> float:
        """One heartbeat (re-registering if needed); returns the wait until the next one."""
        status, note = self._health()
        try:
            if not self.core.registered or (
                not getattr(self._client.agent.check, self.core.call_for(status))(
                    self.core.check_id, notes=note or None
                )
                and self.core.forgotten()
            ):
                self._register(status, note)
        except Exception as exc:
            return self.core.failed(
                translate(exc, self.core.name, self.settings.address, "service:write")
            )
        return self.core.succeeded()

    def _register(self, status: str, note: str) -> None:
        if self.core.leaving:
            return
        self._client.agent.service.register(**self.core.register_kwargs(status, note))
        self.core.registered = True
        log.info("%s: registered in Consul (%s)", self.core.service_id, status)

    def _health(self) -> tuple[str, str]:
        if self.core.health is None:
            return "passing", ""
        try:
            result = self.core.health()
            if inspect.isawaitable(result):
                raise ConfigurationError("ConsulRegistrar needs a plain health callback; "
                                         "use AsyncConsulRegistrar for coroutines")  # fmt: skip
            return self.core.interpret(result)
        except Exception as exc:
            return self.core.callback_failed(exc)

    def close(self) -> None:
        """Stop the heartbeat and deregister (errors are logged, not raised)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(self.settings.timeout + 1)
        self._remove_hook()
        try:
            self._client.agent.service.deregister(self.core.service_id)
        except Exception as exc:
            log.warning("%s: deregistration failed: %s", self.core.service_id, exc)
        self.core.registered = False
        self._client.http.session.close()

    def __enter__(self) -> ConsulRegistrar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncConsulRegistrar(_RegistrarBase):
    """ConsulRegistrar for asyncio: same options; heartbeats run as a task of the loop.

    >>> async with AsyncConsulRegistrar("orders", port=8001) as registrar:   # doctest: +SKIP
    ...     await serve()

    ``health`` may be a plain function or a coroutine function.
    """

    def _init_driver(self) -> None:
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> AsyncConsulRegistrar:
        if self._task is not None:
            return self
        self._client = self.settings.async_client()
        try:
            await self._register(*await self._health())
        except Exception as exc:
            try:
                self._raise_if_config(exc)
            except ConfigurationError:
                await close_now(self._client)
                raise
        self._install_hook()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"lbclient-registrar-{self.core.service_id}"
        )
        return self

    async def _run(self) -> None:
        delay = self.core.interval
        while True:
            await asyncio.sleep(delay)
            delay = await self.beat()

    async def beat(self) -> float:
        status, note = await self._health()
        try:
            if not self.core.registered or (
                not await getattr(self._client.agent.check, self.core.call_for(status))(
                    self.core.check_id, notes=note or None
                )
                and self.core.forgotten()
            ):
                await self._register(status, note)
        except Exception as exc:
            return self.core.failed(
                translate(exc, self.core.name, self.settings.address, "service:write")
            )
        return self.core.succeeded()

    async def _register(self, status: str, note: str) -> None:
        if self.core.leaving:
            return
        await self._client.agent.service.register(**self.core.register_kwargs(status, note))
        self.core.registered = True
        log.info("%s: registered in Consul (%s)", self.core.service_id, status)

    async def _health(self) -> tuple[str, str]:
        if self.core.health is None:
            return "passing", ""
        try:
            result: Any = self.core.health()
            if inspect.isawaitable(result):
                result = await result
            return self.core.interpret(_as_result(result))
        except Exception as exc:
            return self.core.callback_failed(exc)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._remove_hook()
        try:
            await self._client.agent.service.deregister(self.core.service_id)
        except Exception as exc:
            log.warning("%s: deregistration failed: %s", self.core.service_id, exc)
        self.core.registered = False
        await close_now(self._client)

    async def __aenter__(self) -> AsyncConsulRegistrar:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _as_result(value: Any) -> HealthResult:
    return value  # type: ignore[no-any-return]
