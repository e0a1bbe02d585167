"""Fuzzing every setting (issue 10, item 7): whatever value a setting is given, the result is
a ConfigurationError or a working object, never another exception and never a hang. A value
the configuration accepts must also work at the first pick, where bad scheduler options used
to surface."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck as Check
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
import lbclient.grpc
from lbclient import ConfigurationError
from lbclient.schedulers import available_schedulers, scheduler_class
from lbclient.schedulers._options import accepted_options
from lbclient.transport._options import TransportOptions

SERVICES = {"orders": ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]}

ANYTHING: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, 7, 64, 251, 5003, 65536, 65537, 2**61 - 1, 10**9 + 7]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 1e-300, 1e300, -0.0]),
    st.text(max_size=6),
    st.sampled_from(["GET", "http", "instance", "service", "all", "/x", "10s", "user@evil"]),
    st.lists(st.one_of(st.integers(-5, 600), st.text(max_size=4)), max_size=3),
    st.frozensets(st.sampled_from([200, 503, "GET", "post"]), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(-1, 10), max_size=2),
    st.tuples(st.text(max_size=3), st.integers(0, 3)),
    st.sampled_from(available_schedulers()),
    st.sampled_from([lbclient.NO_RETRY, lbclient.SlowStart(), lbclient.OutlierDetection()]),
    st.dictionaries(
        st.sampled_from(["scheduler", "retry", "zone", "ewma_decay"]),
        st.sampled_from(["rr", "maglev", 1.0, None, "eu"]),
        max_size=2,
    ),
)
"""Small values of every shape a setting may be given by mistake (bounded: no 10**9 tables)."""

FUZZ = settings(
    max_examples=50, deadline=None, derandomize=True, suppress_health_check=[Check.too_slow]
)


def outcome(make: Callable[[], object]) -> object | None:
    """The object ``make`` built, or None for a ConfigurationError; anything else fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lbclient.ConfigurationWarning)
        try:
            return make()
        except ConfigurationError:
            return None


def pick_works(lb: lbclient.LoadBalancer) -> None:
    with lb:
        for _ in range(3):
            with lb.pick("orders", lbclient.PickContext(key="user-1")) as handle:
                assert handle.instance.port in (8001, 8002, 8003)


SETTINGS = sorted(f.name for f in dataclasses.fields(lbclient.ServiceConfig))


@FUZZ
@given(name=st.sampled_from(SETTINGS), value=ANYTHING)
def test_any_balancer_setting(name: str, value: Any) -> None:
    lb = outcome(lambda: lbclient.LoadBalancer(SERVICES, **{name: value}))
    if lb is not None:
        assert isinstance(lb, lbclient.LoadBalancer)
        pick_works(lb)
    per_service = outcome(lambda: lbclient.LoadBalancer(SERVICES, services={"orders": value}))
    if per_service is not None:
        assert isinstance(per_service, lbclient.LoadBalancer)
        pick_works(per_service)


SCHEDULER_OPTIONS = sorted(
    (name, option)
    for name in available_schedulers()
    for option in accepted_options(scheduler_class(name)) | {"bogus"}
    if name == scheduler_class(name).name  # aliases name the same class
)


@FUZZ
@given(choice=st.sampled_from(SCHEDULER_OPTIONS), value=ANYTHING)
def test_any_scheduler_option(choice: tuple[str, str], value: Any) -> None:
    scheduler, option = choice
    lb = outcome(
        lambda: lbclient.LoadBalancer(
            SERVICES, scheduler=scheduler, scheduler_options={option: value}
        )
    )
    if lb is not None:
        assert option != "bogus"
        pick_works(lb)


def fields_of(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


OBJECTS: list[tuple[Callable[..., object], str]] = [
    (cls, field)
    for cls in (
        lbclient.RetryPolicy,
        lbclient.SlowStart,
        lbclient.OutlierDetection,
        lbclient.HttpHealthCheck,
        lbclient.TcpHealthCheck,
        lbclient.GrpcHealthCheck,
    )
    for field in fields_of(cls)
]


@FUZZ
@given(target=st.sampled_from(OBJECTS), value=ANYTHING)
def test_any_setting_object_field(target: tuple[Callable[..., object], str], value: Any) -> None:
    cls, field = target
    made = outcome(lambda: cls(**{field: value}))
    if made is not None:
        lb = lbclient.LoadBalancer(SERVICES, scheduler="wrr")  # the object is usable...
        lb.close()
        config = {
            lbclient.RetryPolicy: "retry",
            lbclient.SlowStart: "slow_start",
            lbclient.OutlierDetection: "outlier",
        }.get(type(made), "health_check")
        assert outcome(lambda: lbclient.ServiceConfig(**{config: made})) is not None


TRANSPORT_OPTIONS = sorted(TransportOptions.__optional_keys__ | {"retries"})


@FUZZ
@given(option=st.sampled_from(TRANSPORT_OPTIONS), value=ANYTHING)
def test_any_transport_option(option: str, value: Any) -> None:
    with lbclient.LoadBalancer(SERVICES) as lb:
        for cls in (lbclient.LoadBalancedTransport, lbclient.AsyncLoadBalancedTransport):
            transport = outcome(lambda cls=cls: cls(lb, **{option: value}))
            assert transport is None or option != "retries"


@FUZZ
@given(option=st.sampled_from(["key", "retry", "idempotent", "options", "compression", "x"]),
       value=ANYTHING)  # fmt: skip
def test_any_channel_option(option: str, value: Any) -> None:
    with lbclient.LoadBalancer(SERVICES) as lb:
        channel = outcome(lambda: lbclient.grpc.insecure_channel("orders", lb, **{option: value}))
        if channel is not None:
            assert option != "x"
            channel.close()  # type: ignore[attr-defined]


URI_TEXT = st.text(alphabet="abcz09:/?&=[]%@.,-_ \u0668", max_size=24)


SCHEMES = ["static", "k8s", "consul", "kubernetes", "etcd", "dns", "dns+srv", "nope", ""]


@FUZZ
@given(scheme=st.sampled_from(SCHEMES), rest=URI_TEXT)
def test_any_registry_uri(scheme: str, rest: str) -> None:
    registry = outcome(lambda: lbclient.registry_from_uri(f"{scheme}://{rest}"))
    if registry is not None:
        assert isinstance(registry, lbclient.Registry)
        registry.close()


def registrar_settings() -> list[str]:
    from lbclient._validate import keyword_settings
    from lbclient.consul._registrar import _RegistrarBase

    return sorted(keyword_settings(_RegistrarBase) | {"tll"})


@FUZZ
@given(option=st.sampled_from(["consul", "k8s"]), name=st.data(), value=ANYTHING)
def test_any_registry_or_registrar_keyword(option: str, name: st.DataObject, value: Any) -> None:
    if option == "consul":
        from lbclient.consul import ConsulRegistrar, ConsulRegistry

        key = name.draw(st.sampled_from([*registrar_settings(), "rate", "wait", "zone_key"]))
        outcome(lambda: ConsulRegistrar("orders", 8001, **{key: value}))  # no I/O before start()
        registry = outcome(lambda: ConsulRegistry(**{key: value}))
        if registry is not None:
            registry.close()  # type: ignore[attr-defined]
    else:
        from lbclient.kubernetes import KubernetesRegistry

        key = name.draw(st.sampled_from(["port", "ports", "services", "watch_timeout", "prot"]))
        made = outcome(lambda: KubernetesRegistry("shop", **{key: value}))
        if made is not None:
            made.close()  # type: ignore[attr-defined]
