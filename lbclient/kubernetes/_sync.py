"""The blocking I/O edge: list and watch through ``kubernetes.client``, driven by ListWatch.

Only sending requests and reading lines happens here; every decision is ListWatch's. Runs in
a ThreadWatch thread; ``shutdown()`` (its on_close hook) cuts the open stream so the thread
returns at once instead of waiting for the next event.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from lbclient._exceptions import LBError
from lbclient._instance import ServiceInstance
from lbclient.kubernetes._errors import Expired, unreachable
from lbclient.kubernetes._listwatch import Action, ListWatch
from lbclient.kubernetes._plan import Plan


class Stopped(Exception):
    """The watch was closed while a request was being made."""


class _Stream:
    def __init__(self, response: Any) -> None:
        from kubernetes.watch import watch

        lines: Any = watch.iter_resp_lines  # the client's own line splitter (untyped)
        self.response = response
        self.lines: Iterator[str] = lines(response)

    def cut(self) -> None:
        """Unblock a reader in another thread (the socket is shut down, not just closed)."""
        conn = getattr(self.response, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        try:
            self.response.close()
            self.response.release_conn()
        except Exception:  # a cut socket may complain while closing; it is gone either way
            pass


class SyncDriver:
    """List/watch one service with a ``kubernetes.client.ApiClient``."""

    def __init__(self, plan: Plan, api_client: Any) -> None:
        from kubernetes import client

        self.plan = plan
        self._api = getattr(client, plan.kind.api)(api_client)
        self._lock = threading.Lock()
        self._closed = False
        self._open: set[_Stream] = set()

    def _call(self, **params: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        method = getattr(self._api, self.plan.kind.method)
        try:
            return method(self.plan.namespace, _preload_content=False, **params)
        except ApiException as exc:
            raise self.plan.error(exc.status or 0, exc.body) from None
        except LBError:
            raise
        except Exception as exc:
            raise unreachable(exc, service=self.plan.service, host=self.plan.host) from exc

    def list(self) -> bytes:
        response = self._call(**self.plan.list_params())
        try:
            return bytes(response.data)
        finally:
            response.release_conn()

    def resolve(self) -> tuple[Sequence[ServiceInstance], ListWatch]:
        state = self.plan.new_state()
        state.listed(self.list())
        state.published = state.snapshot()
        return state.published, state

    def poll(self, state: ListWatch | None) -> tuple[Sequence[ServiceInstance] | None, ListWatch]:
        """Block until the service's instances change; return them and where to resume."""
        state = state or self.plan.new_state()
        try:
            while True:
                action = state.next_action()
                if action is Action.LIST:
                    state.listed(self.list())
                elif action is Action.WATCH:
                    self._watch(state)
                else:
                    self._read(state)
                changes = state.take_changes()
                if changes is not None:
                    return changes, state
        except BaseException:
            self._discard(state)
            raise

    def _watch(self, state: ListWatch) -> None:
        # The request is made outside the lock so that shutdown() never waits for a slow
        # connect; a stream that opens after shutdown is closed here instead of being read.
        if self._closed:
            raise Stopped()
        try:
            stream = _Stream(self._call(**self.plan.watch_params(state)))
        except Expired:
            state.expired()
            return
        with self._lock:
            closed = self._closed
            if not closed:
                self._open.add(stream)
        if closed:
            stream.close()
            raise Stopped()
        state.opened(stream)

    def _read(self, state: ListWatch) -> None:
        stream: _Stream = state.stream
        try:
            line = next(stream.lines, None)
        except Exception as exc:
            self._discard(state)
            if self._closed:
                raise Stopped() from exc
            state.broken(exc)
            return
        try:
            state.received(line)
        finally:
            if state.stream is None:
                self._release(stream)

    def _discard(self, state: ListWatch) -> None:
        stream, state.stream = state.stream, None
        if stream is not None:
            self._release(stream)

    def _release(self, stream: _Stream) -> None:
        with self._lock:
            self._open.discard(stream)
        stream.close()

    def shutdown(self) -> None:
        """Stop for good: refuse new watches and cut the open one (any thread)."""
        with self._lock:
            self._closed = True
            streams = list(self._open)
        for stream in streams:
            stream.cut()
