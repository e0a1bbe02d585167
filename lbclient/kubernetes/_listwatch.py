"""The list-then-watch state machine of one service, shared by the sync and async drivers.

No I/O. A driver asks ``next_action()``, performs it (list, open a watch, read one line) and
feeds the result back; after each step ``take_changes()`` says whether the merged instance
list changed. The rules (reference/kubernetes.md):

- list, then watch from the list's ``resourceVersion`` with bookmarks;
- every event (bookmarks included) advances the version the next watch resumes from;
- an ERROR event with code 410, or an HTTP 410, means the version expired: list again and
  watch from the new list's version (the new list replaces the cache, so nothing is lost or
  counted twice);
- a stream that ends (the server's watch timeout) or breaks after delivering events is
  reopened from the last version, without a list; one that fails before delivering anything
  is an error for the caller's backoff.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lbclient._exceptions import RegistryUnavailable
from lbclient._instance import ServiceInstance
from lbclient.kubernetes._errors import status_message

Objects = Callable[[Iterable[Mapping[str, Any]]], tuple[ServiceInstance, ...]]


class Action(enum.Enum):
    LIST = "list"
    WATCH = "watch"
    READ = "read"


class ListWatch:
    """The client's copy of one service's objects and where its watch resumes.

    ``stream`` is the open watch response; the driver that opened it owns and closes it.
    """

    def __init__(self, service: str, to_instances: Objects) -> None:
        self.service = service
        self._to_instances = to_instances
        self.objects: dict[str, Mapping[str, Any]] = {}
        self.resource_version: str | None = None
        self.published: tuple[ServiceInstance, ...] | None = None
        self.stream: Any = None
        self.lists = 0
        self.watches = 0
        self._need_list = True
        self._lines_since_open = 0
        self._empty_streams = 0

    def next_action(self) -> Action:
        if self._need_list:
            return Action.LIST
        return Action.READ if self.stream is not None else Action.WATCH

    # -- results fed back by the driver ---------------------------------------------------

    def listed(self, body: bytes | str | Mapping[str, Any]) -> None:
        data = json.loads(body) if isinstance(body, (bytes, str)) else body
        items = data.get("items") or ()
        self.objects = {str(item["metadata"]["name"]): item for item in items}
        self.resource_version = str(data["metadata"]["resourceVersion"])
        self._need_list = False
        self.lists += 1

    def opened(self, stream: Any) -> None:
        self.stream = stream
        self._lines_since_open = 0
        self.watches += 1

    def expired(self) -> None:
        """HTTP 410 on opening a watch: the version is gone, list again."""
        self._need_list = True

    def received(self, line: bytes | str | None) -> None:
        """One line of the watch stream; None when the stream ended cleanly."""
        if line is None:
            self._stream_done(None)
            return
        if not line.strip():
            return
        event = json.loads(line)
        self._lines_since_open += 1
        self._empty_streams = 0
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                self.stream_closed()
                self._need_list = True
                return
            raise RegistryUnavailable(
                f"the watch of {self.service!r} failed: {obj.get('code')} "
                f"{obj.get('reason')}: {status_message(json.dumps(obj))}",
                service=self.service,
            )
        meta = obj.get("metadata") or {}
        if meta.get("resourceVersion"):
            self.resource_version = str(meta["resourceVersion"])
        if kind in ("ADDED", "MODIFIED"):
            self.objects[str(meta["name"])] = obj
        elif kind == "DELETED":
            self.objects.pop(str(meta.get("name")), None)

    def broken(self, error: BaseException) -> None:
        """Reading the stream failed: reconnect from the last version if it ever worked."""
        self._stream_done(error)

    def stream_closed(self) -> None:
        self.stream = None

    def _stream_done(self, error: BaseException | None) -> None:
        delivered = self._lines_since_open
        self.stream = None
        if delivered:
            return
        self._empty_streams += 1
        if error is not None or self._empty_streams >= 2:
            raise RegistryUnavailable(
                f"the watch of {self.service!r} ended before delivering anything"
                + (f": {type(error).__name__}: {error}" if error else "")
                + "; retrying with backoff",
                service=self.service,
            ) from error

    # -- what to publish -------------------------------------------------------------------

    def snapshot(self) -> tuple[ServiceInstance, ...]:
        return self._to_instances(self.objects.values())

    def take_changes(self) -> tuple[ServiceInstance, ...] | None:
        """The merged list when it differs from the last one published, else None."""
        if self._need_list or self.resource_version is None:
            return None
        current = self.snapshot()
        if current == self.published:
            return None
        self.published = current
        return current
