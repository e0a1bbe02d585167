"""DNS answers read record by record: a record that cannot be dialled (SRV port 0, say) is
skipped and counted, the others apply; only an answer with nothing valid is an error.
Fuzzed with hypothesis through the no-I/O plans, plus a real dnsmasq serving a port-0 SRV."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lbclient_dns import DnsSrvRegistry, Reply, Srv, addresses_plan, srv_plan
from lbclient_dns.testing import DnsmasqServer
from test_dns_plan import NAME, a, drive, srv

import lbclient
from lbclient import RegistryUnavailable, ServiceNotFound
from lbclient.registry import Instances


def test_an_srv_record_with_port_0_is_skipped_and_the_others_apply() -> None:
    answers = {
        (NAME, "SRV"): srv((10, 1, 0, "zero."), (10, 1, 8001, "a.")),
        ("zero.", "A"): a("10.0.0.9"),
        ("a.", "A"): a("10.0.0.1"),
    }
    result = drive(srv_plan("orders", NAME, "ipv4"), answers)
    assert isinstance(result.instances, Instances)
    assert [(i.host, i.port) for i in result.instances] == [("10.0.0.1", 8001)]
    (skipped,) = result.instances.skipped
    assert skipped.entry == "SRV zero. 10.0.0.9:0"
    assert "port" in skipped.reason


def test_nothing_valid_is_a_malformed_answer() -> None:
    answers = {(NAME, "SRV"): srv((10, 1, 0, "zero.")), ("zero.", "A"): a("10.0.0.9")}
    with pytest.raises(RegistryUnavailable, match="DNS sent a malformed answer"):
        drive(srv_plan("orders", NAME, "ipv4"), answers)


TARGETS = st.sampled_from(["a.", "b.", "c.", "gone.", "x y.", "."])
ADDRESS = st.one_of(
    st.ip_addresses().map(str), st.sampled_from(["not an ip", "", "10.0.0.1:80", "::1%eth0"])
)
RECORDS = st.lists(
    st.tuples(
        st.integers(0, 3), st.integers(0, 65535), st.integers(0, 65535), TARGETS
    ),  # priority, weight, port, target
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(
    records=RECORDS,
    hosts=st.dictionaries(
        st.sampled_from(["a.", "b.", "c.", "x y."]), st.lists(ADDRESS, max_size=3), max_size=4
    ),
)
def test_fuzzed_srv_answers(records: list[tuple[int, int, int, str]], hosts: dict) -> None:
    answers = {(NAME, "SRV"): Reply("ok", ttl=5, srv=tuple(Srv(*r) for r in records))}
    for target, addresses in hosts.items():
        answers[(target, "A")] = a(*addresses)
    try:
        result = drive(srv_plan("orders", NAME, "ipv4"), answers)
    except (ServiceNotFound, RegistryUnavailable):
        return  # the documented whole-answer outcomes: nothing to use, or nothing valid
    for instance in result.instances:
        assert instance.port > 0
        assert lbclient.ServiceInstance("orders", instance.host, instance.port)
    used = {i.metadata["srv_priority"] for i in result.instances}
    for priority, _, port, target in records:
        # a valid record (port > 0, an IPv4 address) of the priority in use is never dropped
        if str(priority) in used and port and any(map(is_ipv4, hosts.get(target, ()))):
            assert any(i.port == port for i in result.instances)


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


@settings(max_examples=100, deadline=None)
@given(addresses=st.lists(ADDRESS, max_size=5), port=st.integers(1, 65535))
def test_fuzzed_address_answers(addresses: list[str], port: int) -> None:
    answers = {("orders.example.", "A"): a(*addresses)}
    try:
        result = drive(addresses_plan("orders", "orders.example.", port, "ipv4"), answers)
    except RegistryUnavailable:
        assert addresses
        return
    hosts = {i.host for i in result.instances}
    assert hosts <= set(addresses)
    assert len(result.instances) + len(result.instances.skipped) == len(set(addresses))  # type: ignore[attr-defined]


def test_a_real_port_0_record_is_skipped_by_the_balancer() -> None:
    srv_name = "_http._tcp.orders.example"
    with DnsmasqServer(
        srv={srv_name: [("a.example", 8001, 1, 1), ("zero.example", 0, 1, 1)]},
        hosts={"a.example": ["127.0.0.1"], "zero.example": ["127.0.0.2"]},
    ) as dnsmasq:
        registry = DnsSrvRegistry("_http._tcp.{service}.example", nameservers=[dnsmasq.address])
        with lbclient.LoadBalancer(registry) as lb:
            lb.service("orders")
            stats = lb.stats("orders")
        registry.close()
    assert [row["address"] for row in stats["instances"]] == ["127.0.0.1:8001"]
    assert stats["skipped_entries"] == 1
