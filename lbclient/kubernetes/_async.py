"""The asyncio I/O edge: list and watch through ``kubernetes.aio``, driven by ListWatch.

The twin of ``_sync.py``: same loop, same ListWatch decisions, only the awaits differ. One
``kubernetes.aio`` ApiClient (an aiohttp session) lives as long as the task that uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from lbclient._exceptions import LBError
from lbclient._instance import ServiceInstance
from lbclient.kubernetes._errors import Expired, unreachable
from lbclient.kubernetes._listwatch import Action, ListWatch
from lbclient.kubernetes._plan import Plan


class AsyncDriver:
    """List/watch one service with a ``kubernetes.aio`` ApiClient (created per driver)."""

    def __init__(self, plan: Plan, configuration: Any) -> None:
        from kubernetes.aio import client

        self.plan = plan
        self.api_client: Any = client.ApiClient(configuration)
        self._api = getattr(client, plan.kind.api)(self.api_client)

    async def _call(self, **params: Any) -> Any:
        method = getattr(self._api, f"{self.plan.kind.method}_without_preload_content")
        timeout = params.pop("_request_timeout")
        try:
            response = await method(
                self.plan.namespace, _request_timeout=float(sum(timeout)), **params
            )
        except LBError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise unreachable(exc, service=self.plan.service, host=self.plan.host) from exc
        if not 200 <= response.status <= 299:
            body = await response.read()
            response.release()
            raise self.plan.error(response.status, body)
        return response

    async def list(self) -> bytes:
        response = await self._call(**self.plan.list_params())
        try:
            return bytes(await response.read())
        finally:
            response.release()

    async def resolve(self) -> tuple[Sequence[ServiceInstance], ListWatch]:
        state = self.plan.new_state()
        state.listed(await self.list())
        state.published = state.snapshot()
        return state.published, state

    async def poll(
        self, state: ListWatch | None
    ) -> tuple[Sequence[ServiceInstance] | None, ListWatch]:
        """Wait until the service's instances change; return them and where to resume."""
        state = state or self.plan.new_state()
        try:
            while True:
                action = state.next_action()
                if action is Action.LIST:
                    state.listed(await self.list())
                elif action is Action.WATCH:
                    try:
                        state.opened(await self._call(**self.plan.watch_params(state)))
                    except Expired:
                        state.expired()
                else:
                    await self._read(state)
                changes = state.take_changes()
                if changes is not None:
                    return changes, state
        except BaseException:
            self._discard(state)
            raise

    async def _read(self, state: ListWatch) -> None:
        response = state.stream
        try:
            line = await response.content.readline()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._discard(state)
            state.broken(exc)
            return
        try:
            state.received(line or None)
        finally:
            if state.stream is None:
                response.close()

    def _discard(self, state: ListWatch) -> None:
        response, state.stream = state.stream, None
        if response is not None:
            response.close()

    async def aclose(self) -> None:
        await self.api_client.close()
