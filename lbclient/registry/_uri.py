"""Find a registry by URI scheme through the ``lbclient.registries`` entry-point group."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from lbclient._exceptions import ConfigurationError, MissingDependency
from lbclient._validate import did_you_mean, invalid
from lbclient.registry._base import Registry

GROUP = "lbclient.registries"

_BUILTIN = {
    "static": "lbclient.registry.static:StaticRegistry",
    "consul": "lbclient.consul:ConsulRegistry",
    "k8s": "lbclient.kubernetes:KubernetesRegistry",
    "kubernetes": "lbclient.kubernetes:KubernetesRegistry",
}
"""Used when lbclient runs from a source tree without its entry points installed."""

_EXTRAS = {"consul": "consul", "k8s": "kubernetes", "kubernetes": "kubernetes"}
"""The extra each built-in scheme needs (``static`` needs none)."""


def available_schemes() -> list[str]:
    """Every URI scheme a registry is registered for."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | set(_BUILTIN))


def registry_class(scheme: str) -> type[Registry]:
    """The registry class registered for ``scheme``, or ConfigurationError naming the choices.

    A built-in scheme whose extra is missing (``consul://`` without ``lbclient[consul]``)
    raises MissingDependency naming the extra, as the class itself does.
    """
    found = [ep for ep in entry_points(group=GROUP) if ep.name == scheme]
    if not found and scheme not in _BUILTIN:
        raise ConfigurationError(
            f"no registry for scheme {scheme!r}{did_you_mean(scheme, available_schemes())}; "
            f"available: {', '.join(available_schemes())}"
            " (plugins add schemes, e.g. pip install lbclient-etcd)"
        )
    try:
        if found:
            cls = found[0].load()
        else:
            module, _, name = _BUILTIN[scheme].partition(":")
            cls = getattr(import_module(module), name)
    except ImportError as exc:
        if isinstance(exc, MissingDependency) or (exc.name or "").startswith("lbclient"):
            raise
        if scheme in _EXTRAS:
            raise MissingDependency(f"the {scheme}:// registry", _EXTRAS[scheme]) from exc
        raise ConfigurationError(
            f"the registry plugin for {scheme}:// cannot be imported: {exc}; reinstall it"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Registry)):
        raise ConfigurationError(f"entry point {scheme!r} in {GROUP} is not a Registry: {cls!r}")
    return cls


def registry_from_uri(uri: str) -> Registry:
    """Build a registry from a URI: ``static://?orders=h:1,h:2``, ``consul://host:8500?tag=v2``.

    >>> registry_from_uri("static://?orders=127.0.0.1:8001").resolve("orders")[0].port
    8001
    """
    if not isinstance(uri, str):
        raise invalid("registry URI", uri, "a string such as 'consul://127.0.0.1:8500'")
    try:  # (the port is each registry's to read: etcd:// lists several host:port)
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ConfigurationError(f"registry URI {uri!r} is malformed: {exc}") from None
    if not parts.scheme:
        raise ConfigurationError(
            f"registry URI {uri!r} has no scheme; expected e.g. 'consul://127.0.0.1:8500'"
        )
    return registry_class(parts.scheme.lower()).from_uri(parts)
