"""ServiceInstance accepts only what can be dialled, and every dialler uses its one encoded
address. Fuzzed with hypothesis: any input is a ConfigurationError or an instance whose URL,
Host header and authority httpx accepts as they are. Plus the reproduced cases of issue 10."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import ConfigurationError, ServiceInstance, parse_instance
from lbclient._instance import MAX_WEIGHT
from lbclient.health import HttpHealthCheck
from lbclient.testing import HTTPBackend

from ._support import Recording, send

ODD_HOSTS = [
    "bücher.example", "BÜCHER.Example", "xn--bcher-kva.example", "[::1]", "::1%eth0",
    "a..b", "-a.b", "a-.b", "1.2.3.999", "010.0.0.1", "x" * 64, "a." * 127, "h\x00",
    "h\r\nX: 1", "user@evil.example", "a/b", "a b", "\ufb01.example", "\u200b.example",
]  # fmt: skip
HOSTS = st.one_of(
    st.text(max_size=40),
    st.ip_addresses().map(str),
    st.from_regex(r"[a-zA-Z0-9_-]{1,20}(\.[a-zA-Z0-9_-]{1,20}){0,3}\.?", fullmatch=True),
    st.sampled_from(ODD_HOSTS),
)
PORTS = st.one_of(st.integers(-5, 70000), st.sampled_from(["80", "٨٠", 80.0, True, None]))
WEIGHTS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-2, 2 * int(MAX_WEIGHT)),
    st.sampled_from([True, "1", None]),
)
TAGS = st.one_of(
    st.frozensets(st.text(max_size=5), max_size=3),
    st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
    st.text(max_size=5),
    st.none(),
)
METADATA = st.one_of(
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.one_of(st.integers(), st.none()), min_size=1),
    st.lists(st.text(max_size=3), max_size=2),
    st.none(),
)


def assert_dialable(instance: ServiceInstance) -> None:
    """What the transport, the probes and gRPC do with an instance works, unchanged."""
    host = instance.ascii_host
    assert host.isascii()
    url = httpx.URL(scheme="https", host=host, port=instance.port, path="/health")
    assert url.raw_host.decode("ascii") == host.lower()
    parsed = httpx.URL(f"http://{instance.address}/")
    assert parsed.port in (instance.port, None)  # 80 is left out as the default
    assert parsed.raw_host.decode("ascii") == host.lower()
    assert instance.address.encode("ascii")  # the Host header: never raw UTF-8
    assert instance.authority(9) == instance.address.rsplit(":", 1)[0] + ":9"
    assert len(host.rstrip(".")) <= 253


@settings(max_examples=400, deadline=None)
@given(
    host=HOSTS,
    port=PORTS,
    weight=WEIGHTS,
    tags=TAGS,
    metadata=METADATA,
    id=st.one_of(st.text(max_size=8), st.integers()),
)
def test_any_input_is_a_configuration_error_or_dialable(
    host: Any, port: Any, weight: Any, tags: Any, metadata: Any, id: Any
) -> None:
    try:
        instance = ServiceInstance(
            "orders", host, port, id=id, weight=weight, tags=tags, metadata=metadata
        )
    except ConfigurationError as exc:
        message = str(exc)
        assert "of service 'orders'" in message
        assert len(message) < 600  # values are truncated
        return
    assert_dialable(instance)
    assert math.isfinite(instance.weight)
    assert 0 < instance.weight <= MAX_WEIGHT
    assert all(isinstance(t, str) for t in instance.tags)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in instance.metadata.items())
    assert isinstance(instance.id, str)
    assert instance.id


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=40), st.builds("{}:{}".format, HOSTS, PORTS)))
def test_any_host_port_text_is_a_configuration_error_or_dialable(text: str) -> None:
    try:
        instance = parse_instance("orders", text)
    except ConfigurationError:
        return
    assert_dialable(instance)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("10.0.0.1:80:90", "single ':'"),
        ("h:٨٠", "ASCII digits"),
        ("bad host:80", "host"),
        ("a/b:80", "host"),
        ("user@evil.example:80", "host"),
        ("h\r\nX-Injected: 1:80", "host"),
        ("h\x00:80", "host"),
        ("x" * 100_000 + ":80", "host"),
        ("1.2.3.999:80", "host"),
        ("-a.example:80", "host"),
        ({"host": "h", "port": "٨٠"}, "port"),
        ({"host": "h", "port": 1, "tags": "abc"}, "tags"),
        ({"host": "h", "port": 1, "metadata": {"a": 1}}, "metadata"),
        ({"host": "h", "port": 1, "id": 7}, "id"),
        ({"host": "h", "port": 1, "weight": MAX_WEIGHT * 2}, "weight"),
        ({"host": "h", "port": 1, "scheme": "ht tp"}, "scheme"),
        ({"host": 5, "port": 1}, "host"),
        ({"address": 5}, "address"),
    ],
)
def test_reproduced_entries_are_refused_naming_the_field(entry: Any, field: str) -> None:
    with pytest.raises(ConfigurationError, match=field) as caught:
        parse_instance("orders", entry)
    assert "orders" in str(caught.value)
    assert len(str(caught.value)) < 600  # a 100k host is truncated, not echoed


def test_one_encoded_address_for_names_and_literals() -> None:
    name = ServiceInstance("orders", "Bücher.Example", 443)
    assert name.host == "Bücher.Example"  # as given, for people
    assert name.ascii_host == "xn--bcher-kva.example"  # as dialled
    assert name.address == "xn--bcher-kva.example:443"
    assert name.id == "xn--bcher-kva.example:443"
    v6 = ServiceInstance("orders", "[2001:DB8:0::1]", 80)
    assert (v6.ascii_host, v6.address, v6.authority(8080)) == (
        "2001:db8::1",
        "[2001:db8::1]:80",
        "[2001:db8::1]:8080",
    )
    assert ServiceInstance("orders", "_grpc._tcp.a_b.example", 1).ascii_host.startswith("_grpc")
    assert ServiceInstance("orders", "example.com.", 1).ascii_host == "example.com"


def test_requests_send_the_encoded_host_never_raw_utf8() -> None:
    """The real transport dials the IDNA name (it does not resolve here) and the Host header
    and SNI it hands over are the ASCII forms."""
    inner = Recording(httpx.HTTPTransport(retries=0))
    lb = lbclient.LoadBalancer({"bücher": ["https://Bücher.invalid:8443"]})
    with pytest.raises(httpx.ConnectError):
        send(
            "sync",
            lb,
            "GET",
            "https://bücher/x",
            options={"tls_server_name": "service", "retry": lbclient.NO_RETRY},
            inner=inner,
        )
    (request,) = inner.requests
    assert request.url.raw_host == b"xn--bcher-kva.invalid"
    assert request.headers["host"] == "xn--bcher-kva.invalid:8443"
    assert request.headers.raw[0][1].isascii()
    assert request.extensions["sni_hostname"] == "xn--bcher-kva"
    lb.close()


def test_a_probe_and_a_request_dial_the_same_address() -> None:
    """A name written in capitals with a final dot: the probe and the request both go to
    its one encoded form, with the same Host header."""
    with HTTPBackend("a") as backend:
        instance = ServiceInstance("orders", "LocalHost.", backend.port)
        prober = HttpHealthCheck("/probe").open()  # /health: not recorded
        try:
            assert prober.probe(instance).healthy
        finally:
            prober.close()
        probed = host_header(backend)
        with lbclient.LoadBalancer({"orders": [instance]}) as lb:
            response = send("sync", lb, "GET", "http://orders/")
        assert response.status_code == 200
        assert host_header(backend) == probed == f"localhost:{backend.port}"


def host_header(backend: HTTPBackend) -> str:
    return next(v for k, v in backend.last_headers.items() if k.lower() == "host")
