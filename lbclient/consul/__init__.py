"""Consul integration: discovery (ConsulRegistry) and self-registration (ConsulRegistrar).

Needs the ``consul`` extra: ``pip install 'lbclient[consul]'`` (py-consul, with aiohttp for
asyncio). ``lbclient.testing.consul.ConsulTestServer`` is a Consul stand-in for tests.
"""

from lbclient.consul._registrar import AsyncConsulRegistrar, ConsulRegistrar
from lbclient.consul._registration import HealthCallback, HealthResult
from lbclient.consul._registry import ConsulRegistry
from lbclient.consul._settings import ConsulSettings

AsyncConsulRegistry = ConsulRegistry
"""The same class: it serves asyncio code (``aresolve``, watches started in a loop) too."""

__all__ = [
    "AsyncConsulRegistrar",
    "AsyncConsulRegistry",
    "ConsulRegistrar",
    "ConsulRegistry",
    "ConsulSettings",
    "HealthCallback",
    "HealthResult",
]
