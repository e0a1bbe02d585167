"""StaticRegistry: a fixed list of instances per service, from code, the environment or a file."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote

from lbclient import _validate as check
from lbclient._address import show
from lbclient._answer import AnswerReader, Instances
from lbclient._exceptions import ConfigurationError, ServiceNotFound
from lbclient._instance import InstanceEntry, ServiceInstance, parse_instance, parse_instances
from lbclient.registry._base import NoWatch, Registry, SnapshotSink, Subscription
from lbclient.registry._watch import ThreadWatch, WatchPolicy

ENV_PREFIX = "LBCLIENT_SERVICE_"


class StaticRegistry(Registry):
    """Instances listed up front. Entries are validated at once, so mistakes fail at startup;
    a file reloaded later skips (logs and counts) a bad entry and applies the others.

    >>> registry = StaticRegistry({"orders": ["127.0.0.1:8001", "[::1]:8002"]})
    >>> [i.address for i in registry.resolve("orders")]
    ['127.0.0.1:8001', '[::1]:8002']

    ``StaticRegistry.from_env()`` reads ``LBCLIENT_SERVICE_ORDERS=host:port,host:port``;
    ``StaticRegistry.from_file(path)`` reads JSON (or TOML) ``{"orders": [...]}`` and, with
    ``reload_interval``, follows edits of the file (services added to it later included).
    """

    scheme = "static"

    def __init__(
        self,
        services: Mapping[str, Iterable[InstanceEntry] | str],
        *,
        path: Path | None = None,
        reload_interval: float | None = None,
    ) -> None:
        if not isinstance(services, Mapping):
            raise ConfigurationError(
                f"StaticRegistry takes a mapping of service name to instances, got "
                f"{type(services).__name__}"
            )
        self._services = {
            check.text("StaticRegistry service name", name): parse_instances(name, entries)
            for name, entries in services.items()
        }
        self._path = path
        self._reload_interval = check.optional(check.seconds, "reload_interval", reload_interval)

    def __repr__(self) -> str:
        return f"StaticRegistry({sorted(self._services)})"

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self._services)

    def resolve(self, service: str) -> Sequence[ServiceInstance]:
        if self._path is not None and self._reload_interval:
            self._reread(self._path, service)
        try:
            return self._services[service]
        except KeyError:
            known = ", ".join(sorted(self._services)) or "none"
            raise ServiceNotFound(
                f"service {service!r} is not in the static registry (known: {known})",
                service=service,
            ) from None

    async def aresolve(self, service: str) -> Sequence[ServiceInstance]:
        if self._path is not None and self._reload_interval:
            return await asyncio.to_thread(self.resolve, service)  # reads the file
        return self.resolve(service)

    def _reread(self, path: Path, service: str) -> None:
        """A followed file is the truth at first use too: a service added to it after startup
        is found, one removed is not. An unreadable file keeps what was known (the watch
        reports it); a service never seen gets the file's error."""
        try:
            data = _read_file(path)
        except ConfigurationError:
            if service not in self._services:
                raise
            return
        if service in data:
            self._services[service] = parse_instances(service, data[service])
        else:
            self._services.pop(service, None)

    def watch(self, service: str, sink: SnapshotSink) -> Subscription:
        if self._path is None or not self._reload_interval:
            return NoWatch()
        path, interval = self._path, self._reload_interval

        def poll(mtime: float | None) -> tuple[Sequence[ServiceInstance] | None, float]:
            current = path.stat().st_mtime
            if mtime is not None and current == mtime:
                return None, current
            return reload_instances(service, _read_file(path).get(service, ()), path), current

        # A local file is cheap to re-read: after a bad edit (or a read that caught a write
        # half done), try again at the reload pace instead of WatchPolicy's 30 s default.
        policy: WatchPolicy[float] = WatchPolicy(
            f"static:{service}", sink, min_interval=interval, max_backoff=max(interval, 1.0)
        )
        return ThreadWatch(policy, poll)

    @classmethod
    def from_env(
        cls, prefix: str = ENV_PREFIX, environ: Mapping[str, str] | None = None
    ) -> StaticRegistry:
        """Services from ``<prefix><NAME>=host:port,host:port`` (NAME lower-cased, _ → -)."""
        environ = os.environ if environ is None else environ
        services = {
            key[len(prefix) :].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith(prefix)
        }
        return cls(services)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, reload_interval: float | None = None
    ) -> StaticRegistry:
        """Services from a JSON or TOML file mapping names to lists of instances."""
        file = Path(path)
        return cls(_read_file(file), path=file, reload_interval=reload_interval)

    @classmethod
    def from_uri(cls, uri: SplitResult) -> StaticRegistry:
        """``static:///etc/services.json`` or ``static://?orders=h:1,h:2&payments=h:3``."""
        if uri.path and uri.path != "/":
            return cls.from_file(unquote(uri.path))
        services: dict[str, str] = {}
        for name, entries in parse_qsl(uri.query, keep_blank_values=True):
            if name in services:
                raise ConfigurationError(
                    f"static:// URI names service {name!r} twice; list its instances once, "
                    f"comma-separated: {name}={services[name]},{entries}"
                )
            services[name] = entries
        return cls(services)


def reload_instances(service: str, entries: Any, path: Path) -> Instances:
    """The entries of ``service`` in a reloaded file, read one by one: a bad entry (or a
    duplicate id) is skipped and the others apply, as for any registry answer. Only a value
    that is not a list (nor a ``"host:port,host:port"`` string) is an error as a whole."""
    if isinstance(entries, str):
        entries = entries.replace(",", " ").split()
    if not isinstance(entries, list):
        raise ConfigurationError(
            f"static registry file {str(path)!r}: service {service!r} must map to a list of "
            f"instances (or 'host:port,host:port'), got {type(entries).__name__}",
            service=service,
        )
    reader = AnswerReader(service, f"static registry file {str(path)!r}")
    found: dict[str, ServiceInstance] = {}
    for position, entry in enumerate(entries):
        label = entry if isinstance(entry, str) else f"#{position}"
        instance = reader.attempt(label, parse_instance, service, entry)
        if instance is None:
            continue
        if instance.id in found:
            reader.skip(label, f"duplicate instance id {show(instance.id)}; give each a unique id")
            continue
        found[instance.id] = instance
    return reader.result(found.values())


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read static registry file {str(path)!r}: {exc}") from exc
    try:
        if path.suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"static registry file {str(path)!r} is malformed: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"static registry file {str(path)!r} must hold an object mapping service names to "
            "lists of instances"
        )
    return data
