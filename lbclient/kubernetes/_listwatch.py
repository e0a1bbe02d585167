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
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lbclient._address import show
from lbclient._answer import skipped_of
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
        self.objects: dict[str, bytes] = {}
        """The objects by name, packed (see ``pack``)."""
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
        try:
            data = json.loads(body) if isinstance(body, (bytes, str)) else body
        except ValueError as exc:
            raise self._malformed(f"a list answer that is not JSON ({exc})") from None
        meta = data.get("metadata") if isinstance(data, Mapping) else None
        items = data.get("items") if isinstance(data, Mapping) else None
        if not isinstance(meta, Mapping) or not isinstance(items or [], list):
            raise self._malformed(f"a list answer that is not a List: {show(data)}")
        if meta.get("resourceVersion") is None:
            raise self._malformed("a list answer without metadata.resourceVersion")
        # An item without a name is kept under its position: the converter skips (and
        # counts) it as malformed instead of the whole list failing.
        named = {_name_of(item) or f"\0#{n}": item for n, item in enumerate(items or ())}
        self.objects = {name: pack(item) for name, item in named.items()}
        self.resource_version = str(meta["resourceVersion"])
        self._need_list = False
        self.lists += 1
        self.relisted(named)

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
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise self._malformed(f"a watch line that is not JSON ({exc})") from None
        self._lines_since_open += 1
        self._empty_streams = 0
        obj = (event.get("object") if isinstance(event, Mapping) else None) or {}
        if not isinstance(event, Mapping) or not isinstance(obj, Mapping):
            raise self._malformed(f"a watch event that is not an object: {show(event)}")
        kind = event.get("type")
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
        meta = obj.get("metadata")
        if isinstance(meta, Mapping) and meta.get("resourceVersion"):
            self.resource_version = str(meta["resourceVersion"])
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        name = _name_of(obj)
        if name is None:  # not trackable by name: list again (it is skipped there)
            raise self._malformed(f"a {kind} event for an object without metadata.name")
        if kind == "DELETED":
            self.objects.pop(name, None)
            self.touched(name, None)
        else:
            self.objects[name] = pack(obj)
            self.touched(name, obj)

    def relisted(self, objects: Mapping[str, Any]) -> None:
        """Hook: a list replaced every object (the namespace-wide watch regroups them)."""

    def touched(self, name: str, obj: Mapping[str, Any] | None) -> None:
        """Hook: a watch event added or changed (``obj``) or deleted (None) object ``name``."""

    def _malformed(self, what: str) -> RegistryUnavailable:
        self._need_list = True
        self.stream_closed()
        return RegistryUnavailable(
            f"Kubernetes sent {what} for service {self.service!r}; listing again",
            service=self.service,
        )

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
        return self._to_instances(unpack(packed) for packed in self.objects.values())

    def take_changes(self) -> tuple[ServiceInstance, ...] | None:
        """The merged list when it differs from the last one published, else None."""
        if self._need_list or self.resource_version is None:
            return None
        current = self.snapshot()
        if current == self.published and skipped_of(current) == skipped_of(self.published or ()):
            return None
        self.published = current
        return current


def pack(obj: Any) -> bytes:
    """An object as kept between events: compact JSON, compressed. A service's slices
    repeat the same keys endpoint after endpoint, so this is about a tenth of the parsed
    dicts (100,000 endpoints: tens of MB, not hundreds); it is read back only when the
    object's service changed."""
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 1)


def unpack(packed: bytes) -> Any:
    return json.loads(zlib.decompress(packed))


def _name_of(obj: Any) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else None
