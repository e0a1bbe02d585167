"""etcd v3 over its JSON gateway, without I/O: request bodies, answers, errors, watch events.

The gateway (``/v3/kv/range``, ``/v3/watch``, ``/v3/lease/*``) speaks the gRPC messages as
JSON: keys and values are base64, 64-bit numbers are strings, fields holding their default
value (0, false, PUT) are left out. Everything that knows this lives here so the sync and
async edges (``_http.py``) only send bytes and hand back parsed JSON.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

from lbclient import (
    ConfigurationError,
    RegistryAccessDenied,
    RegistryUnavailable,
    ServiceInstance,
    parse_instance,
)
from lbclient.registry import AnswerReader, Instances, SkippedEntry

log = logging.getLogger("lbclient.etcd")

Json = dict[str, Any]

# gRPC status codes the gateway reports in {"code": N}
_NOT_FOUND = 5
_PERMISSION_DENIED = 7
_UNAUTHENTICATED = 16
_INVALID_ARGUMENT = 3


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix`` (etcd's GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"  # every key


def service_prefix(root: str, service: str) -> bytes:
    """``/services`` + ``orders`` → ``b"/services/orders/"`` (the trailing slash keeps
    ``orders`` from matching ``orders-v2``)."""
    if not service or "/" in service:
        raise ConfigurationError(
            f"etcd service name {service!r} must be non-empty and contain no '/'",
            service=service or None,
        )
    return f"{root.rstrip('/')}/{service}/".encode()


class LeaseNotFound(RegistryUnavailable):
    """etcd no longer knows the lease (it expired): grant a new one and register again."""


def check(status: int, body: bytes, what: str) -> Json:
    """Parse a gateway answer, or raise the lbclient error that says what went wrong."""
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise RegistryUnavailable(
            f"etcd {what}: HTTP {status} with a body that is not JSON; is this an etcd v3 "
            "client URL (port 2379)?"
        )
    if status == 200 and "error" not in data:
        return data
    raise error_from(data, status, what)


def error_from(data: Json, status: int, what: str) -> Exception:
    """Translate the gateway's ``{"error", "code", "message"}`` into our exception tree."""
    error = data.get("error")
    if isinstance(error, dict):  # inside a stream: {"error": {"grpc_code": .., "message": ..}}
        code = int(error.get("grpc_code") or error.get("code") or 0)
        message = str(error.get("message") or error)
    else:
        code = int(data.get("code") or 0)
        message = str(data.get("message") or error or f"HTTP {status}")
    if code == _NOT_FOUND and "lease" in message:
        return LeaseNotFound(f"etcd {what}: {message}")
    if code in (_UNAUTHENTICATED, _PERMISSION_DENIED) or status in (401, 403):
        return RegistryAccessDenied(
            f"etcd {what}: {message}; check the user and its role's permission on the prefix"
        )
    if code == _INVALID_ARGUMENT or status == 400:
        return ConfigurationError(f"etcd {what}: {message}")
    return RegistryUnavailable(f"etcd {what}: {message} (HTTP {status}, gRPC code {code})")


def range_request(prefix: bytes) -> Json:
    return {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}


def watch_request(prefix: bytes, start_revision: int) -> Json:
    return {
        "create_request": {
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix)),
            "start_revision": str(start_revision),
            "progress_notify": True,
        }
    }


def put_request(key: bytes, value: bytes, lease: int) -> Json:
    return {"key": b64(key), "value": b64(value), "lease": str(lease)}


def encode_instance(instance: ServiceInstance) -> bytes:
    """The JSON value a registrar writes: every field but the service and the id (the key)."""
    data: Json = {"host": instance.host, "port": instance.port}
    if instance.weight != 1.0:
        data["weight"] = instance.weight
    if instance.zone:
        data["zone"] = instance.zone
    if instance.tags:
        data["tags"] = sorted(instance.tags)
    if instance.metadata:
        data["metadata"] = dict(instance.metadata)
    if instance.scheme:
        data["scheme"] = instance.scheme
    if instance.priority:
        data["priority"] = instance.priority
    return json.dumps(data, separators=(",", ":")).encode()


_FIELDS = ("host", "port", "weight", "zone", "tags", "metadata", "scheme", "address", "priority")


def decode_instance(service: str, instance_id: str, value: bytes) -> ServiceInstance:
    """Parse a value written by EtcdRegistrar, or by gRPC-Go's etcd naming (``{"Addr": ...}``).

    Unknown keys are ignored so that other writers' extra fields do not hide an instance.
    """
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise ConfigurationError(f"value is not JSON: {exc}", service=service) from exc
    if not isinstance(data, Mapping):
        raise ConfigurationError("value is not a JSON object", service=service)
    fields = {k: data[k] for k in _FIELDS if k in data}
    if "Addr" in data and "host" not in fields and "address" not in fields:
        fields["address"] = data["Addr"]
    if isinstance(data.get("Metadata"), Mapping) and "metadata" not in fields:
        # gRPC-Go's Metadata is any JSON: carried as text, so it stays str -> str
        fields["metadata"] = {
            str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data["Metadata"].items()
        }
    fields["id"] = instance_id
    return parse_instance(service, fields)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the watch knows: the instances by key, as of ``revision``. Immutable."""

    service: str
    prefix: bytes
    revision: int
    instances: Mapping[bytes, ServiceInstance]
    skipped: Mapping[bytes, SkippedEntry] = dataclasses.field(default_factory=dict)
    """Keys whose value is not a valid instance (each key is one entry, read on its own)."""

    @property
    def ordered(self) -> Instances:
        return Instances(
            (self.instances[k] for k in sorted(self.instances)),
            (self.skipped[k] for k in sorted(self.skipped)),
        )

    @property
    def usable(self) -> Instances:
        """``ordered``, or RegistryUnavailable when every key holds garbage (as for the other
        registries, an answer with nothing valid keeps the last good list)."""
        reader = AnswerReader(self.service, "etcd")
        reader.skipped = [self.skipped[k] for k in sorted(self.skipped)]
        return reader.result(self.instances[k] for k in sorted(self.instances))

    @classmethod
    def from_range(cls, service: str, prefix: bytes, answer: Json) -> Snapshot:
        try:
            revision = int(answer.get("header", {}).get("revision") or 0)
        except (AttributeError, TypeError, ValueError):
            revision = -1
        if revision < 0 or not isinstance(answer.get("kvs", []), list):
            raise RegistryUnavailable(
                f"etcd read of {service!r}: a malformed answer (header.revision or kvs)"
            )
        instances: dict[bytes, ServiceInstance] = {}
        skipped: dict[bytes, SkippedEntry] = {}
        for position, kv in enumerate(answer.get("kvs", ())):
            _put(service, prefix, instances, skipped, kv, position)
        return cls(service, prefix, revision, instances, skipped)

    def apply(self, events: list[Json], revision: int) -> Snapshot:
        """A new snapshot with watch ``events`` applied (PUT replaces, DELETE removes)."""
        instances, skipped = dict(self.instances), dict(self.skipped)
        for position, event in enumerate(events):
            kv = event.get("kv", {})
            if event.get("type") == "DELETE":
                key = unb64(kv.get("key", ""))
                instances.pop(key, None)
                skipped.pop(key, None)
            else:
                _put(self.service, self.prefix, instances, skipped, kv, position)
        return dataclasses.replace(self, revision=revision, instances=instances, skipped=skipped)


def _put(
    service: str,
    prefix: bytes,
    instances: dict[bytes, ServiceInstance],
    skipped: dict[bytes, SkippedEntry],
    kv: Any,
    position: int,
) -> None:
    """Read one key-value. One bad writer must not hide the other instances: a malformed
    value is skipped, and counted (the balancer logs it once)."""
    reader = AnswerReader(service, "etcd")
    key = reader.attempt(f"etcd key-value #{position}", lambda: unb64(kv["key"]))
    if key is None:
        skipped[b"\0#%d" % position] = reader.skipped[0]
        return
    instances.pop(key, None)
    skipped.pop(key, None)
    instance_id = key[len(prefix) :].decode(errors="replace")
    label = f"etcd key {key.decode(errors='replace')!r}"
    value: Any = kv.get("value", "") if isinstance(kv, Mapping) else None
    instance = reader.attempt(label, lambda: decode_instance(service, instance_id, unb64(value)))
    if instance is None:
        skipped[key] = reader.skipped[0]
    else:
        instances[key] = instance


@dataclasses.dataclass(frozen=True)
class WatchStep:
    """What one message of the watch stream means for the watcher."""

    snapshot: Snapshot
    changed: bool = False
    compacted: bool = False


def watch_step(snapshot: Snapshot, message: Json) -> WatchStep:
    """Fold one line of ``/v3/watch`` into the snapshot.

    A ``compact_revision`` means our start revision was compacted away: the caller must read
    the whole prefix again. Progress notifications advance the revision without a change.
    A malformed value is skipped key by key; a message malformed as a whole (not an object,
    events that are not objects, a revision that is not a number) is RegistryUnavailable,
    and the watch starts over from a fresh read.
    """
    try:
        return _watch_step(snapshot, message)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise RegistryUnavailable(
            f"etcd sent a malformed watch message for {snapshot.service!r} "
            f"({type(exc).__name__}: {exc}); reading the prefix again"
        ) from None


def _watch_step(snapshot: Snapshot, message: Json) -> WatchStep:
    if "error" in message:
        raise error_from(message, 200, "watch")
    result = message.get("result", {})
    if result.get("compact_revision"):
        log.info(
            "etcd watch of %r: revision %d was compacted (now %s); reading the prefix again",
            snapshot.service,
            snapshot.revision + 1,
            result["compact_revision"],
        )
        return WatchStep(snapshot, compacted=True)
    if result.get("canceled"):
        reason = result.get("cancel_reason") or "no reason given"
        raise RegistryUnavailable(f"etcd canceled the watch of {snapshot.service!r}: {reason}")
    events = result.get("events") or []
    if not events:
        header_revision = int(result.get("header", {}).get("revision") or 0)
        if result.get("created") or header_revision <= snapshot.revision:
            return WatchStep(snapshot)
        # A progress notification: every event up to this revision has been sent.
        return WatchStep(dataclasses.replace(snapshot, revision=header_revision))
    revision = max(int(e.get("kv", {}).get("mod_revision") or 0) for e in events)
    updated = snapshot.apply(events, max(revision, snapshot.revision))
    changed = updated.ordered != snapshot.ordered or updated.skipped != snapshot.skipped
    return WatchStep(updated, changed=changed)
