"""StaticRegistry: a fixed list of instances per service, from code, the environment or a file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote

from lbclient import _validate as check
from lbclient._exceptions import ConfigurationError, ServiceNotFound
from lbclient._instance import InstanceEntry, ServiceInstance, parse_instances
from lbclient.registry._base import NoWatch, Registry, SnapshotSink, Subscription
from lbclient.registry._watch import ThreadWatch, WatchPolicy

ENV_PREFIX = "LBCLIENT_SERVICE_"


class StaticRegistry(Registry):
    """Instances listed up front. Entries are validated at once, so mistakes fail at startup.

    >>> registry = StaticRegistry({"orders": ["127.0.0.1:8001", "[::1]:8002"]})
    >>> [i.address for i in registry.resolve("orders")]
    ['127.0.0.1:8001', '[::1]:8002']

    ``StaticRegistry.from_env()`` reads ``LBCLIENT_SERVICE_ORDERS=host:port,host:port``;
    ``StaticRegistry.from_file(path)`` reads JSON (or TOML) ``{"orders": [...]}`` and, with
    ``reload_interval``, follows edits of the file.
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
        try:
            return self._services[service]
        except KeyError:
            known = ", ".join(sorted(self._services)) or "none"
            raise ServiceNotFound(
                f"service {service!r} is not in the static registry (known: {known})",
                service=service,
            ) from None

    async def aresolve(self, service: str) -> Sequence[ServiceInstance]:
        return self.resolve(service)

    def watch(self, service: str, sink: SnapshotSink) -> Subscription:
        if self._path is None or not self._reload_interval:
            return NoWatch()
        path, interval = self._path, self._reload_interval

        def poll(mtime: float | None) -> tuple[Sequence[ServiceInstance] | None, float]:
            current = path.stat().st_mtime
            if mtime is not None and current == mtime:
                return None, current
            return parse_instances(service, _read_file(path).get(service, ())), current

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
