"""Every setting is checked when it is given: each case below once raised a bare error, hung,
or was silently misread, and now raises a ConfigurationError naming the setting, the value and
what is valid (issue 10, item 4)."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import lbclient
import lbclient.grpc
from lbclient import ConfigurationError, HttpHealthCheck, OutlierDetection, RetryPolicy, SlowStart

SERVICES = {"orders": ["127.0.0.1:8001", "127.0.0.1:8002"]}
NAN = math.nan


def balancer(**settings: Any) -> lbclient.LoadBalancer:
    return lbclient.LoadBalancer(SERVICES, **settings)


CASES: list[tuple[str, Callable[[], object], str]] = [
    # (id, what the user wrote, what the error must say)
    ("retry None", lambda: balancer(retry=None), r"retry=None is invalid: expected a RetryPolicy"),
    ("retry int", lambda: balancer(retry=3), r"retry=3 is invalid: expected a RetryPolicy"),
    ("subset 2.5", lambda: balancer(subset_size=2.5), r"subset_size=2\.5 is invalid: .*integer"),
    ("subset huge", lambda: balancer(subset_size=10**12), r"subset_size=.* in \[1, 100000\]"),
    ("options None", lambda: balancer(scheduler_options=None), r"scheduler_options=None .*mapping"),
    ("options list", lambda: balancer(scheduler_options=[]), r"scheduler_options=\[\] .*mapping"),
    ("services int", lambda: balancer(services={"orders": 5}), r"services\['orders'\]=5 .*dict"),
    ("services list", lambda: balancer(services=["orders"]), r"services=\['orders'\] .*mapping"),
    (
        "ewma nan",
        lambda: balancer(ewma_decay=NAN),
        r"ewma_decay=nan .*finite number in \[0.001, 31536000\]",
    ),
    ("ewma inf", lambda: balancer(ewma_decay=math.inf), r"ewma_decay=inf .*finite"),
    ("ewma str", lambda: balancer(ewma_decay="10"), r"ewma_decay='10' .*finite number"),
    ("heartbeat nan", lambda: balancer(heartbeat_timeout=NAN), r"heartbeat_timeout=nan"),
    ("heartbeat huge", lambda: balancer(heartbeat_timeout=1e300), r"heartbeat_timeout=1e\+300"),
    ("panic nan", lambda: balancer(panic_threshold=NAN), r"panic_threshold=nan .*\[0, 1\]"),
    ("fail_open str", lambda: balancer(fail_open="false"), r"fail_open='false' .*True or False"),
    ("zone int", lambda: balancer(zone=1), r"zone=1 .*string"),
    ("filters str", lambda: balancer(filters="zone"), r"filters='zone' .*list of filter"),
    ("filters int", lambda: balancer(filters=[1]), r"filters=\[1\] .*not 1"),
    ("outlier bad", lambda: balancer(outlier=5), r"outlier=5 .*OutlierDetection"),
    ("listeners str", lambda: balancer(listeners="x"), r"listeners='x' .*list"),
    ("setting typo", lambda: balancer(schedular="rr"), r"unknown setting 'schedular', did you"),
    ("service typo", lambda: balancer(services={"orders": {"retries": 3}}), r"'retries', did"),
    ("scheduler typo", lambda: balancer(scheduler="round_robbin"), r"did you mean 'round_robin'"),
    ("scheduler int", lambda: balancer(scheduler=3), r"scheduler=3 .*scheduler name"),
    (
        "maglev 2**61-1",  # once: trial division for hours
        lambda: balancer(scheduler="maglev", scheduler_options={"table_size": 2**61 - 1}),
        r"table_size=2305843009213693951 .*in \[2, 1000003\]",
    ),
    (
        "maglev 10**9+7",  # once: MemoryError at the first pick
        lambda: balancer(scheduler="maglev", scheduler_options={"table_size": 10**9 + 7}),
        r"table_size=1000000007 is invalid",
    ),
    (
        "maglev not prime",
        lambda: balancer(scheduler="maglev", scheduler_options={"table_size": 65536}),
        r"table_size=65536 .*prime",
    ),
    (
        "unknown option",  # once: only at the first pick
        lambda: balancer(scheduler="maglev", scheduler_options={"tabel_size": 5003}),
        r"unknown maglev option 'tabel_size', did you mean 'table_size'\?",
    ),
    (
        "option nan",
        lambda: balancer(scheduler="least_request", scheduler_options={"bias": NAN}),
        r"option bias=nan is invalid",
    ),
    (
        "wrr resolution",
        lambda: balancer(scheduler="wrr", scheduler_options={"resolution": 10**9}),
        r"resolution=1000000000 .*\[1, 4096\]",
    ),
    (
        "ring size",
        lambda: balancer(scheduler="ring_hash", scheduler_options={"min_ring_size": 10**8}),
        r"min_ring_size=100000000 is invalid",
    ),
    ("attempts nan", lambda: RetryPolicy(attempts=NAN), r"RetryPolicy.attempts=nan .*\[1, 100\]"),  # type: ignore[arg-type]
    ("attempts 0", lambda: RetryPolicy(attempts=0), r"RetryPolicy.attempts=0"),
    ("methods str", lambda: RetryPolicy(methods="GET"), r"RetryPolicy.methods='GET' .*collection"),
    ("methods int", lambda: RetryPolicy(methods=[1]), r"not 1"),  # type: ignore[list-item]
    ("statuses int", lambda: RetryPolicy(statuses=503), r"RetryPolicy.statuses=503"),  # type: ignore[arg-type]
    ("statuses 999", lambda: RetryPolicy(statuses={999}), r"statuses item=999 .*\[100, 599\]"),
    ("budget inf", lambda: RetryPolicy(budget_ratio=math.inf), r"budget_ratio=inf"),
    ("wait int", lambda: RetryPolicy(wait=1), r"RetryPolicy.wait=1 .*tenacity"),  # type: ignore[arg-type]
    ("slow nan", lambda: SlowStart(window=NAN), r"SlowStart.window=nan"),
    ("slow steps", lambda: SlowStart(steps=2.5), r"SlowStart.steps=2\.5"),  # type: ignore[arg-type]
    ("outlier nan", lambda: OutlierDetection(interval=NAN), r"OutlierDetection.interval=nan"),
    ("outlier 2.5", lambda: OutlierDetection(consecutive_5xx=2.5), r"consecutive_5xx=2\.5"),  # type: ignore[arg-type]
    ("probe nan", lambda: HttpHealthCheck(interval=NAN), r"HttpHealthCheck.interval=nan"),
    ("probe path", lambda: HttpHealthCheck("/a b"), r"HttpHealthCheck.path='/a b'"),
    ("probe statuses", lambda: HttpHealthCheck(statuses=200), r"HttpHealthCheck.statuses=200"),  # type: ignore[arg-type]
    ("probe port", lambda: lbclient.TcpHealthCheck(port=70000), r"TcpHealthCheck.port=70000"),
    (
        "uri ipv6",
        lambda: lbclient.registry_from_uri("consul://[::1"),
        r"'consul://\[::1' is malformed",
    ),
    ("uri port", lambda: lbclient.registry_from_uri("consul://h:x"), r"bad port: 'h:x'"),
    ("uri scheme", lambda: lbclient.registry_from_uri("consl://h"), r"did you mean 'consul'"),
    ("uri type", lambda: lbclient.registry_from_uri(5), r"registry URI=5"),  # type: ignore[arg-type]
    ("k8s -1", lambda: lbclient.registry_from_uri("k8s://ns/orders:-1"), r"port of 'orders'='-1'"),
    ("k8s 0", lambda: lbclient.registry_from_uri("k8s://ns/orders:0"), r"port of 'orders'='0'"),
    (
        "k8s huge",
        lambda: lbclient.registry_from_uri("k8s://ns/orders:99999999999999999999"),
        r"'99999999999999999999' is invalid: expected a port number in \[1, 65535\]",
    ),
    ("k8s digits", lambda: lbclient.registry_from_uri("k8s://ns/orders:\u0668\u0660"), r"port"),
    ("k8s ?port", lambda: lbclient.registry_from_uri("k8s://ns?port=0"), r"\?port='0'"),
    (
        "static twice",  # once: silently kept h:2
        lambda: lbclient.registry_from_uri("static://?orders=h:1&orders=h:2"),
        r"names service 'orders' twice; .*orders=h:1,h:2",
    ),
    ("static reload", lambda: lbclient.StaticRegistry({}, reload_interval=NAN), r"reload_interval"),
    ("transport lb", lambda: lbclient.LoadBalancedTransport(5), r"lb=5"),  # type: ignore[arg-type]
    (
        "host header",
        lambda: lbclient.LoadBalancedTransport(balancer(), host_header=42),  # type: ignore[arg-type]
        r"host_header=42 .*string",
    ),
    (
        "host header @",
        lambda: lbclient.AsyncLoadBalancedTransport(balancer(), host_header="user@evil.example"),
        r"host_header='user@evil.example'",
    ),
    (
        "transport typo",
        lambda: lbclient.LoadBalancedTransport(balancer(), retries=None),  # type: ignore[call-arg]
        r"unknown transport option 'retries', did you mean 'retry'\?",
    ),
    (
        "passthrough",
        lambda: lbclient.LoadBalancedTransport(balancer(), unknown_service="ignore"),  # type: ignore[arg-type]
        r"unknown_service='ignore'",
    ),
    (
        "inner transport",
        lambda: lbclient.LoadBalancedTransport(balancer(), "x"),  # type: ignore[arg-type]
        r"transport='x' .*HTTPTransport",
    ),
    (
        "channel retry",
        lambda: lbclient.grpc.insecure_channel("orders", balancer(), retry=3),  # type: ignore[arg-type]
        r"retry=3 .*RetryPolicy",
    ),
    (
        "channel typo",
        lambda: lbclient.grpc.aio.insecure_channel("orders", balancer(), idempotnt="all"),  # type: ignore[call-arg]
        r"unknown channel option 'idempotnt', did you mean 'idempotent'\?",
    ),
    (
        "channel idempotent",
        lambda: lbclient.grpc.insecure_channel("orders", balancer(), idempotent="/a/B"),
        r"idempotent='/a/B' .*collection",
    ),
    (
        "channel options",
        lambda: lbclient.grpc.insecure_channel("orders", balancer(), options=[("a",)]),  # type: ignore[list-item]
        r"options=.*\(name, value\) pairs",
    ),
]


@pytest.mark.parametrize(("factory", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_setting_is_a_configuration_error(factory: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        factory()


def test_retry_methods_keep_whole_names() -> None:
    assert RetryPolicy(methods=["get", "put"]).methods == frozenset({"GET", "PUT"})
    assert RetryPolicy(statuses=[503]).statuses == frozenset({503})


def test_scheduler_options_are_checked_before_the_first_pick() -> None:
    # The balancer is never used: the mistake surfaces where it is written.
    with pytest.raises(ConfigurationError, match="unknown round_robin option 'bogus'"):
        balancer(scheduler_options={"bogus": 1})
    lb = balancer(scheduler="maglev", scheduler_options={"table_size": 5003})
    with lb, lb.pick("orders") as handle:
        assert handle.instance.port in (8001, 8002)


def test_settings_typed_dict_lists_every_setting() -> None:
    import dataclasses

    fields = {f.name for f in dataclasses.fields(lbclient.ServiceConfig)}
    assert set(lbclient.ServiceSettings.__optional_keys__) == fields


def test_slow_start_under_a_scheduler_that_ignores_weights_warns() -> None:
    with pytest.warns(lbclient.ConfigurationWarning, match="slow_start has no effect with .*'lc'"):
        balancer(scheduler="lc", slow_start=SlowStart())
    with pytest.warns(lbclient.ConfigurationWarning) as caught:
        balancer(slow_start=SlowStart())  # round robin, the default
    assert caught[0].filename == __file__  # points at the user's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balancer(scheduler="wrr", slow_start=SlowStart()).close()


def test_consul_settings_are_checked() -> None:
    import lbclient.consul as consul

    with pytest.raises(ConfigurationError, match=r"unknown setting 'tll', did you mean 'ttl'\?"):
        consul.ConsulRegistrar("orders", 8001, tll="10s")
    with pytest.raises(ConfigurationError, match=r"unknown setting 'tgs', did you mean 'tags'\?"):
        consul.ConsulRegistry(tgs=["v2"])
    with pytest.raises(ConfigurationError, match="ttl: expected seconds"):
        consul.ConsulRegistrar("orders", 8001, ttl=NAN)
    with pytest.raises(ConfigurationError, match=r"rate=nan"):
        consul.ConsulRegistry(rate=NAN)
    with pytest.raises(ConfigurationError, match=r"tags=5"):
        consul.ConsulRegistrar("orders", 8001, tags=5)
    with pytest.raises(ConfigurationError, match=r"weights key 'Pasing', did you mean 'Passing'"):
        consul.ConsulRegistrar("orders", 8001, weights={"Pasing": 1})
    with pytest.raises(ConfigurationError, match=r"token must be a string"):
        consul.ConsulRegistry(token=b"secret")  # and the value is never shown
    assert consul.ConsulRegistry(tags="v2").query.tags == ("v2",)  # one tag, not three


def test_kubernetes_settings_are_checked() -> None:
    import lbclient.kubernetes as kubernetes

    with pytest.raises(ConfigurationError, match=r"unknown setting 'prot', did you mean 'port'"):
        kubernetes.KubernetesRegistry("shop", prot="http")
    with pytest.raises(ConfigurationError, match=r"services='orders' .*collection"):
        kubernetes.KubernetesRegistry("shop", services="orders")
    with pytest.raises(ConfigurationError, match=r"ports\['orders'\]=0"):
        kubernetes.KubernetesRegistry("shop", ports={"orders": 0})
    with pytest.raises(ConfigurationError, match=r"namespace='Shop!'"):
        kubernetes.KubernetesRegistry("Shop!")


def run_without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``import <module>`` fails, as without its extra."""
    prelude = f"import sys; sys.modules[{module!r}] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("module", "code", "extra"),
    [
        ("consul", "lbclient.LoadBalancer('consul://127.0.0.1:8500')", "consul"),
        ("consul", "lbclient.registry_from_uri('consul://127.0.0.1:8500')", "consul"),
        ("consul", "lbclient.ConsulRegistry", "consul"),
        ("consul", "lbclient.ConsulRegistrar", "consul"),
        ("kubernetes", "lbclient.LoadBalancer('k8s://shop/orders:http')", "kubernetes"),
        ("kubernetes", "lbclient.LoadBalancer('kubernetes://shop')", "kubernetes"),
        ("kubernetes", "lbclient.KubernetesRegistry('shop')", "kubernetes"),
        ("grpc", "import lbclient.grpc", "grpc"),
        ("grpc", "import lbclient.grpc.aio", "grpc"),
        ("grpc", "lbclient.GrpcHealthCheck()", "grpc"),
    ],
)
def test_every_way_into_an_extra_names_it(module: str, code: str, extra: str) -> None:
    done = run_without(
        module,
        "import lbclient\n"
        "try:\n"
        f"    {code}\n"
        "except lbclient.MissingDependency as exc:\n"
        "    print(exc.extra, exc)\n"
        "else:\n"
        "    print('no error')\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{extra} "), done.stdout
    assert f"pip install 'lbclient[{extra}]'" in done.stdout


def test_importing_lbclient_grpc_makes_aio_available() -> None:
    code = (
        "import lbclient, lbclient.grpc\n"
        "lb = lbclient.LoadBalancer({'orders': ['127.0.0.1:50051']})\n"
        "channel = lbclient.grpc.aio.insecure_channel('orders', lb)\n"
        "print(type(channel).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "LoadBalancedAioChannel"


@pytest.mark.parametrize(
    "factory",
    [
        lambda: RetryPolicy(statuses=range(10**12)),
        lambda: RetryPolicy(methods=(str(i) for i in range(10**12))),
        lambda: HttpHealthCheck(statuses=range(10**12)),
    ],
    ids=["statuses", "methods", "probe statuses"],
)
def test_huge_collections_fail_fast(factory: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError, match=r"at most 1\d* items"):
        factory()


def test_a_remembered_valid_option_does_not_let_an_equal_bool_through() -> None:
    balancer(scheduler="dh", scheduler_options={"table_size": 1}).close()
    with pytest.raises(ConfigurationError, match="table_size=True is invalid"):
        balancer(scheduler="dh", scheduler_options={"table_size": True})


def test_subset_key_without_subset_size_warns() -> None:
    with pytest.warns(lbclient.ConfigurationWarning, match="subset_key has no effect"):
        balancer(subset_key="client-1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balancer(subset_key="client-1", subset_size=1).close()
