"""Plan: everything the drivers need to list and watch one service, decided up front. No I/O."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from lbclient.kubernetes._errors import error_for_status
from lbclient.kubernetes._kinds import Kind
from lbclient.kubernetes._listwatch import ListWatch
from lbclient.kubernetes._objects import Selection

CONNECT_TIMEOUT = 5.0
LIST_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class Plan:
    namespace: str
    kind: Kind
    selection: Selection
    host: str
    watch_timeout: float = 300.0
    """Each watch asks the server to end it after this long to twice that (client-go's 5-10
    minutes), then resumes from the last version; a read stalled past that is a dead link."""

    @property
    def service(self) -> str:
        return self.selection.service

    def new_state(self) -> ListWatch:
        selection = self.selection
        return ListWatch(selection.service, lambda objs: self.kind.convert(selection, objs))

    def selector(self) -> dict[str, str]:
        """The list/watch query selecting the objects this plan follows."""
        return self.kind.selector(self.service)

    def list_params(self) -> dict[str, Any]:
        return {
            **self.selector(),
            "_request_timeout": (CONNECT_TIMEOUT, LIST_TIMEOUT),
        }

    def watch_params(self, state: ListWatch) -> dict[str, Any]:
        seconds = int(random.uniform(self.watch_timeout, 2 * self.watch_timeout)) or 1
        return {
            **self.selector(),
            "watch": True,
            "resource_version": state.resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": seconds,
            "_request_timeout": (CONNECT_TIMEOUT, float(seconds) + 30.0),
        }

    def error(self, status: int, body: Any) -> Exception:
        return error_for_status(
            status,
            body,
            service=self.service,
            namespace=self.namespace,
            resource=self.kind.resource,
            host=self.host,
        )
