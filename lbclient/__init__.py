"""lbclient: client-side load balancing with service discovery for httpx and grpcio.

>>> import httpx, lbclient
>>> lb = lbclient.LoadBalancer({"orders": ["127.0.0.1:8001", "127.0.0.1:8002"]},
...                            scheduler="peak_ewma")
>>> client = httpx.Client(transport=lbclient.LoadBalancedTransport(lb))
>>> # client.get("http://orders/api/items")  -- the host names the service
"""

import types as _types
import typing
from importlib.metadata import version as _metadata_version

from lbclient._balancer import LoadBalancer, ServiceState
from lbclient._breaker import CircuitBreaker
from lbclient._config import ServiceConfig, ServiceSettings
from lbclient._context import PickContext
from lbclient._endpoint import Endpoint
from lbclient._exceptions import (
    CircuitOpen,
    ConfigurationError,
    ConfigurationWarning,
    DeadlineExceeded,
    LBError,
    MissingDependency,
    NoAvailableInstance,
    Overloaded,
    RegistryAccessDenied,
    RegistryUnavailable,
    SchemeDowngradeRefused,
    ServiceNotFound,
)
from lbclient._handle import PickHandle
from lbclient._hedge import HedgePolicy
from lbclient._instance import ServiceInstance, parse_instance, parse_instances
from lbclient._listener import LoadBalancerListener
from lbclient._outcome import Failure, Outcome
from lbclient._retry import NO_RETRY, RetryBudget, RetryPolicy
from lbclient.filters import OutlierDetection, SlowStart
from lbclient.health import GrpcHealthCheck, HealthCheck, HttpHealthCheck, TcpHealthCheck
from lbclient.registry import Registry, StaticRegistry, registry_from_uri
from lbclient.schedulers import Scheduler, available_schedulers, register_scheduler
from lbclient.transport import (
    AsyncLoadBalancedTransport,
    LoadBalancedTransport,
    key_from_cookie,
    key_from_extension,
    key_from_header,
)

if typing.TYPE_CHECKING:  # the lazily loaded names below, typed for users' type checkers
    from lbclient.consul import AsyncConsulRegistrar as AsyncConsulRegistrar
    from lbclient.consul import AsyncConsulRegistry as AsyncConsulRegistry
    from lbclient.consul import ConsulRegistrar as ConsulRegistrar
    from lbclient.consul import ConsulRegistry as ConsulRegistry
    from lbclient.kubernetes import KubernetesRegistry as KubernetesRegistry

__version__ = _metadata_version("lbclient")  # one source: pyproject.toml, via the install

_OPTIONAL = {
    # name: (module, extra) -- imported on first access so the core needs no optional extra
    "AsyncConsulRegistrar": ("lbclient.consul", "consul"),
    "AsyncConsulRegistry": ("lbclient.consul", "consul"),
    "ConsulRegistrar": ("lbclient.consul", "consul"),
    "ConsulRegistry": ("lbclient.consul", "consul"),
    "KubernetesRegistry": ("lbclient.kubernetes", "kubernetes"),
}


def __getattr__(name: str) -> object:
    if name in _OPTIONAL:
        import importlib

        module_name, extra = _OPTIONAL[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name and exc.name.startswith("lbclient"):
                raise
            raise MissingDependency(name, extra) from exc
        return getattr(module, name)
    raise AttributeError(f"module 'lbclient' has no attribute {name!r}")


__all__ = [
    "NO_RETRY",
    "AsyncLoadBalancedTransport",
    "CircuitBreaker",
    "CircuitOpen",
    "ConfigurationError",
    "ConfigurationWarning",
    "DeadlineExceeded",
    "Endpoint",
    "Failure",
    "GrpcHealthCheck",
    "HealthCheck",
    "HedgePolicy",
    "HttpHealthCheck",
    "LBError",
    "LoadBalancedTransport",
    "LoadBalancer",
    "LoadBalancerListener",
    "MissingDependency",
    "NoAvailableInstance",
    "Outcome",
    "OutlierDetection",
    "Overloaded",
    "PickContext",
    "PickHandle",
    "Registry",
    "RegistryAccessDenied",
    "RegistryUnavailable",
    "RetryBudget",
    "RetryPolicy",
    "Scheduler",
    "SchemeDowngradeRefused",
    "ServiceConfig",
    "ServiceInstance",
    "ServiceNotFound",
    "ServiceSettings",
    "ServiceState",
    "SlowStart",
    "StaticRegistry",
    "TcpHealthCheck",
    "__version__",
    "available_schedulers",
    "key_from_cookie",
    "key_from_extension",
    "key_from_header",
    "parse_instance",
    "parse_instances",
    "register_scheduler",
    "registry_from_uri",
]

# Show the public module in reprs, tracebacks and help(): ``lbclient.ConfigurationError``,
# not ``lbclient._exceptions.ConfigurationError`` (as httpx does). Not for classes that
# annotate attributes themselves (the dataclasses, ClassVars): typing.get_type_hints (and
# so pydantic, cattrs, ...) resolves those annotations in ``sys.modules[cls.__module__]``.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type):
        _rename = "__annotations__" not in vars(_value)
    else:
        _rename = isinstance(_value, _types.FunctionType)
    if _rename:
        _value.__module__ = "lbclient"
del _name, _value, _rename
