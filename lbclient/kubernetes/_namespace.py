"""One list+watch of a whole namespace, fanned out to every service watched through it.

A balancer calling hundreds of Services would otherwise hold one watch (one connection, one
server-side watcher) per Service. Past a few services (``namespace_watch_from``) the
registry watches every EndpointSlice of the namespace that carries the
``kubernetes.io/service-name`` label once, and hands each watched service the merge of its
own slices, publishing a service only when its list changed. The list-then-watch rules are
ListWatch's own (``NamespaceListWatch`` only groups the objects by service); the converter,
the entry-by-entry checks and the "publish only on change" rule are the per-service ones.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lbclient._answer import skipped_of
from lbclient._instance import ServiceInstance
from lbclient.kubernetes._listwatch import ListWatch, unpack
from lbclient.kubernetes._objects import Selection
from lbclient.kubernetes._plan import Plan
from lbclient.registry._base import SnapshotSink
from lbclient.registry._watch import LoopWatch, WatchPolicy

log = logging.getLogger("lbclient.kubernetes")

ServiceOf = Callable[[Mapping[str, Any]], "str | None"]


class NamespaceListWatch(ListWatch):
    """ListWatch over every service's objects, grouped by service; ``dirty`` names the
    services whose objects changed since the fan-out last looked."""

    def __init__(self, label: str, service_of: ServiceOf) -> None:
        super().__init__(label, lambda objects: ())
        self._service_of = service_of
        self.members: dict[str, set[str]] = {}
        """Service -> the names of its objects."""
        self._owner: dict[str, str] = {}
        self.dirty: set[str] = set()

    def relisted(self, objects: Mapping[str, Any]) -> None:
        self.dirty.update(self.members)
        self.members.clear()
        self._owner.clear()
        for name, obj in objects.items():
            self._file(name, obj)

    def touched(self, name: str, obj: Mapping[str, Any] | None) -> None:
        old = self._owner.pop(name, None)
        if old is not None:
            names = self.members[old]
            names.discard(name)
            if not names:
                del self.members[old]
            self.dirty.add(old)
        if obj is not None:
            self._file(name, obj)

    def _file(self, name: str, obj: Mapping[str, Any]) -> None:
        service = self._service_of(obj) if isinstance(obj, Mapping) else None
        if service is None:
            return
        self._owner[name] = service
        self.members.setdefault(service, set()).add(name)
        self.dirty.add(service)

    def objects_of(self, service: str) -> list[Mapping[str, Any]]:
        return [unpack(self.objects[name]) for name in sorted(self.members.get(service, ()))]

    def take_changes(self) -> tuple[ServiceInstance, ...] | None:
        if self._need_list or self.resource_version is None or not self.dirty:
            return None
        return Changed(self)


class Changed(tuple[ServiceInstance, ...]):
    """What the namespace watch "publishes": no instances, just the state to fan out."""

    state: NamespaceListWatch

    def __new__(cls, state: NamespaceListWatch) -> Changed:
        self = super().__new__(cls)
        self.state = state
        return self


@dataclasses.dataclass(frozen=True)
class NamespacePlan(Plan):
    """The plan of the namespace-wide list and watch (``service`` names it in messages)."""

    def selector(self) -> dict[str, str]:
        return dict(self.kind.every_service)

    def new_state(self) -> ListWatch:
        return NamespaceListWatch(self.service, self.kind.service_of)


class _Member:
    """One watched service's sink, and what it was last given."""

    def __init__(
        self,
        fanout: FanOut,
        selection: Selection,
        sink: SnapshotSink,
        published: tuple[ServiceInstance, ...] | None,
    ) -> None:
        self.fanout = fanout
        self.selection = selection
        self.sink = sink
        self.published = published

    def close(self) -> None:
        self.fanout.leave(self)


class FanOut:
    """The sink of the namespace watch: recompute the services whose slices changed and
    publish each one's new list to its members. Publishes run on the watch's loop."""

    def __init__(
        self,
        plan: NamespacePlan,
        driver: Any,
        policy_args: Mapping[str, Any],
        on_empty: Callable[[FanOut], None],
    ) -> None:
        self.plan = plan
        self._lock = threading.Lock()
        self._members: dict[str, list[_Member]] = {}
        self._closed = False
        self._state: NamespaceListWatch | None = None
        self._on_empty = on_empty
        policy: WatchPolicy[ListWatch] = WatchPolicy(f"k8s:{plan.namespace}/*", self, **policy_args)
        self._watch = LoopWatch(policy, driver.poll, cleanup=driver.aclose)

    def join(
        self,
        selection: Selection,
        sink: SnapshotSink,
        published: tuple[ServiceInstance, ...] | None,
    ) -> _Member | None:
        """Add a member; None when this fan-out already closed (its last member left)."""
        member = _Member(self, selection, sink, published)
        with self._lock:
            if self._closed:
                return None
            self._members.setdefault(selection.service, []).append(member)
        # What the namespace watch already knows reaches the newcomer without waiting for
        # the next change of its service.
        self._watch.loop.call_soon_threadsafe(self._catch_up, member)
        return member

    def leave(self, member: _Member) -> None:
        with self._lock:
            members = self._members.get(member.selection.service, [])
            if member not in members:
                return
            members.remove(member)
            if not members:
                del self._members[member.selection.service]
            last = self._closed = not self._members
        if last:
            self._on_empty(self)
            self._watch.close()

    # -- the SnapshotSink of the namespace watch (on its loop) ------------------------------

    def publish(self, instances: Sequence[ServiceInstance]) -> None:
        if not isinstance(instances, Changed):
            return
        state = self._state = instances.state
        dirty, state.dirty = state.dirty, set()
        with self._lock:
            affected = [(s, list(self._members[s])) for s in dirty if s in self._members]
        for service, members in affected:
            self._deliver(state, service, members)

    def _catch_up(self, member: _Member) -> None:
        if self._state is not None and member.selection.service not in self._state.dirty:
            self._deliver(self._state, member.selection.service, [member])

    def _deliver(self, state: NamespaceListWatch, service: str, members: list[_Member]) -> None:
        converted: dict[Selection, tuple[ServiceInstance, ...] | Exception] = {}
        for member in members:
            selection = member.selection
            if selection not in converted:
                try:
                    converted[selection] = self.plan.kind.convert(
                        selection, state.objects_of(service)
                    )
                except Exception as exc:  # one service's bad answer is that service's error
                    converted[selection] = exc
            result = converted[selection]
            try:
                if isinstance(result, Exception):
                    member.sink.fail(result)
                    continue
                if result == member.published and skipped_of(result) == skipped_of(
                    member.published or ()
                ):
                    continue
                member.published = result
                member.sink.publish(result)
            except Exception as exc:  # a sink that cannot take it must not stop the others
                _fail(member.sink, exc, service)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            members = [m for ms in self._members.values() for m in ms]
        for member in members:
            _fail(member.sink, error, member.selection.service)

    def heartbeat(self, instance_id: str) -> None:
        return None


def _fail(sink: SnapshotSink, error: BaseException, service: str) -> None:
    try:
        sink.fail(error)
    except Exception:
        log.exception("%s: the sink failed to record a registry error", service)
