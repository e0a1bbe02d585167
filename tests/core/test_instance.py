"""ServiceInstance and the static-list parser: accepted forms, and errors that name the entry."""

from __future__ import annotations

import math
from typing import Any

import pytest

from lbclient import ConfigurationError, ServiceInstance, parse_instance, parse_instances


@pytest.mark.parametrize(
    ("entry", "host", "port", "address"),
    [
        ("127.0.0.1:8001", "127.0.0.1", 8001, "127.0.0.1:8001"),
        (" orders-1.internal:80 ", "orders-1.internal", 80, "orders-1.internal:80"),
        ("[::1]:8080", "::1", 8080, "[::1]:8080"),
        ("[fe80::1%eth0]:9000", "fe80::1%eth0", 9000, "[fe80::1%eth0]:9000"),
        ({"host": "10.0.0.7", "port": 8001}, "10.0.0.7", 8001, "10.0.0.7:8001"),
        ({"host": "[::1]", "port": "8443"}, "::1", 8443, "[::1]:8443"),
        ({"address": "[2001:db8::7]:65535"}, "2001:db8::7", 65535, "[2001:db8::7]:65535"),
        (ServiceInstance("orders", "h", 1), "h", 1, "h:1"),
    ],
)
def test_accepted_forms(entry: Any, host: str, port: int, address: str) -> None:
    instance = parse_instance("orders", entry)
    assert (instance.service, instance.host, instance.port) == ("orders", host, port)
    assert instance.address == address
    assert instance.id == address  # the default id is the address


def test_dict_fields_are_kept() -> None:
    instance = parse_instance(
        "orders",
        {
            "host": "h",
            "port": 1,
            "id": "orders-1",
            "weight": 3,
            "zone": "eu-1a",
            "tags": ["v2", "canary"],
            "metadata": {"version": "2.1"},
            "scheme": "https",
        },
    )
    assert instance.id == "orders-1"
    assert instance.weight == 3.0
    assert isinstance(instance.weight, float)
    assert instance.zone == "eu-1a"
    assert instance.tags == frozenset({"v2", "canary"})
    assert instance.metadata["version"] == "2.1"
    assert instance.secure
    with pytest.raises(TypeError):
        instance.metadata["version"] = "3"  # type: ignore[index]


def test_scheme_prefix_and_instance_of_another_service() -> None:
    assert parse_instance("orders", "https://h:443").secure
    assert not parse_instance("orders", "http://h:80").secure
    moved = parse_instance("payments", ServiceInstance("orders", "h", 1))
    assert moved.service == "payments"


def test_instances_are_immutable_and_hashable() -> None:
    a = ServiceInstance("orders", "h", 1, tags=frozenset({"x"}))
    b = ServiceInstance("orders", "h", 1, tags=frozenset({"x"}))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.port = 2  # type: ignore[misc]


def test_a_comma_separated_string_is_a_list() -> None:
    parsed = parse_instances("orders", "h:1, h:2 [::1]:3")
    assert [i.address for i in parsed] == ["h:1", "h:2", "[::1]:3"]


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ("h:0", "h"),
        ("h:65536", "h"),
        ({"host": "h", "port": 70000}, "h"),
        ({"host": "h", "port": -1}, "h"),
        ("h:http", "h:http"),
        ("h", "'h'"),
        (":8080", ":8080"),
        ("[]:8080", "[]:8080"),
        ({"host": "  ", "port": 80}, "of service 'orders'"),
        ("::1", "[::1]:PORT"),
        ({"host": "h", "port": 1, "weight": 0}, "h"),
        ({"host": "h", "port": 1, "weight": -2.5}, "h"),
        ({"host": "h", "port": 1, "weight": math.nan}, "h"),
        ({"host": "h", "port": 1, "weight": math.inf}, "h"),
        ({"host": "h", "port": 1, "weight": "heavy"}, "h"),
        ({"host": "h", "port": 1, "weight": True}, "h"),
        ({"host": "h"}, "'host': 'h'"),
        ({"host": "h", "port": 1, "colour": "red"}, "colour"),
        ({"host": "h", "port": 1.5}, "1.5"),
        (42, "42"),
    ],
)
def test_invalid_entries_raise_configuration_error_naming_them(entry: Any, named: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_instances("orders", ["ok:1", entry])
    message = str(caught.value)
    assert named in message
    assert "orders" in message
    assert caught.value.service == "orders"
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError still work


def test_duplicate_ids_name_both_entries() -> None:
    with pytest.raises(ConfigurationError, match=r"duplicate instance id '127.0.0.1:1'") as caught:
        parse_instances("orders", ["127.0.0.1:1", {"host": "127.0.0.1", "port": 1}])
    assert "{'host': '127.0.0.1', 'port': 1}" in str(caught.value)
    with pytest.raises(ConfigurationError, match="duplicate instance id 'x'"):
        parse_instances("orders", [{"address": "h:1", "id": "x"}, {"address": "h:2", "id": "x"}])
    # Distinct ids make the same address usable twice (two processes behind one NAT, say).
    assert len(parse_instances("orders", [{"address": "h:1", "id": "x"}, "h:1"])) == 2


def test_empty_service_name_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="service name is empty"):
        ServiceInstance("", "h", 1)


def test_equal_ports_and_tags_are_one_object() -> None:
    """Registries send them as new objects for every instance (a port above 256 is 32
    bytes, a frozenset 216): 100,000 instances keep one of each."""
    port, tags = int("8080"), frozenset(["v2", "canary"])
    a = ServiceInstance("orders", "h", port, tags=tags)
    b = ServiceInstance("orders", "h", int("8080"), tags=frozenset(["canary", "v2"]))
    assert a.port is b.port
    assert a.tags is b.tags
    assert ServiceInstance("orders", "h", 1, tags=[]).tags is ServiceInstance("o", "h", 2).tags
