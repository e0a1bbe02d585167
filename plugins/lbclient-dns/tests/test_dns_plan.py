"""RFC 2782 selection and the A/AAAA rules, driven by hand-written replies (no network)."""

from __future__ import annotations

import pytest
from lbclient_dns import Query, Reply, Resolution, Srv, addresses_plan, srv_plan
from lbclient_dns._plan import Plan, clamp_ttl

from lbclient import RegistryUnavailable, ServiceNotFound


def drive(plan: Plan, answers: dict[tuple[str, str], Reply]) -> Resolution:
    """Answer each query from ``answers`` (missing: NXDOMAIN) and return the resolution."""
    try:
        query = next(plan)
        while True:
            query = plan.send(answers.get((query.name, query.rdtype), Reply("nxdomain")))
    except StopIteration as done:
        result: Resolution = done.value
        return result


def srv(*records: tuple[int, int, int, str], ttl: float = 30) -> Reply:
    return Reply("ok", ttl=ttl, srv=tuple(Srv(*r) for r in records))


def a(*addresses: str, ttl: float = 30) -> Reply:
    return Reply("ok", ttl=ttl, addresses=addresses)


NAME = "_http._tcp.orders.example."


def test_lowest_priority_only_with_weights_shared_by_addresses() -> None:
    answers = {
        (NAME, "SRV"): srv((10, 60, 8001, "a."), (10, 20, 8002, "b."), (20, 5, 8003, "c.")),
        ("a.", "A"): a("10.0.0.1", "10.0.0.2", ttl=5),
        ("b.", "A"): a("10.0.0.3"),
        ("b.", "AAAA"): Reply("noanswer"),
        ("c.", "A"): a("10.0.0.9"),
    }
    result = drive(srv_plan("orders", NAME, "any"), answers)
    assert {(i.host, i.port, i.weight) for i in result.instances} == {
        ("10.0.0.1", 8001, 30.0),
        ("10.0.0.2", 8001, 30.0),
        ("10.0.0.3", 8002, 20.0),
    }
    assert result.ttl == 5  # the smallest TTL of the records used
    assert result.instances[0].metadata["srv_priority"] == "10"


def test_next_priority_when_no_target_of_the_lowest_has_an_address() -> None:
    answers = {
        (NAME, "SRV"): srv((10, 1, 8001, "gone."), (20, 1, 8003, "c.")),
        ("c.", "A"): a("10.0.0.9"),
    }
    result = drive(srv_plan("orders", NAME, "ipv4"), answers)
    assert [(i.host, i.port) for i in result.instances] == [("10.0.0.9", 8003)]


def test_zero_weights() -> None:
    answers = {
        (NAME, "SRV"): srv((1, 0, 1, "a."), (1, 0, 2, "b.")),
        ("a.", "A"): a("10.0.0.1"),
        ("b.", "A"): a("10.0.0.2"),
    }
    assert {i.weight for i in drive(srv_plan("o", NAME, "ipv4"), answers).instances} == {1.0}
    answers[(NAME, "SRV")] = srv((1, 0, 1, "a."), (1, 50, 2, "b."))
    weights = {i.port: i.weight for i in drive(srv_plan("o", NAME, "ipv4"), answers).instances}
    assert weights == {1: 0.5, 2: 50.0}


def test_dot_target_means_no_instance() -> None:
    result = drive(srv_plan("o", NAME, "any"), {(NAME, "SRV"): srv((0, 0, 0, "."))})
    assert result.instances == ()


def test_srv_errors() -> None:
    with pytest.raises(ServiceNotFound, match="NXDOMAIN"):
        drive(srv_plan("o", NAME, "any"), {})
    with pytest.raises(ServiceNotFound, match="no SRV records"):
        drive(srv_plan("o", NAME, "any"), {(NAME, "SRV"): Reply("noanswer")})
    broken = Reply("unavailable", error="SERVFAIL", server="10.0.0.53#53")
    with pytest.raises(RegistryUnavailable, match=r"SERVFAIL; check the nameserver 10.0.0.53"):
        drive(srv_plan("o", NAME, "any"), {(NAME, "SRV"): broken})
    answers = {(NAME, "SRV"): srv((1, 1, 1, "a.")), ("a.", "A"): broken}
    with pytest.raises(RegistryUnavailable):
        drive(srv_plan("o", NAME, "any"), answers)
    with pytest.raises(ServiceNotFound, match="has an address"):
        drive(srv_plan("o", NAME, "any"), {(NAME, "SRV"): srv((1, 1, 1, "a."))})


def test_addresses_mode() -> None:
    answers = {("h.", "A"): a("10.0.0.1", ttl=3), ("h.", "AAAA"): a("fd00::1", ttl=7)}
    result = drive(addresses_plan("o", "h.", 8080, "any"), answers)
    assert [i.address for i in result.instances] == ["10.0.0.1:8080", "[fd00::1]:8080"]
    assert result.ttl == 3
    empty = {("h.", "A"): Reply("noanswer"), ("h.", "AAAA"): Reply("noanswer")}
    assert drive(addresses_plan("o", "h.", 80, "any"), empty).instances == ()
    with pytest.raises(ServiceNotFound, match="NXDOMAIN"):
        drive(addresses_plan("o", "h.", 80, "any"), {})


def test_ttl_is_bounded() -> None:
    assert clamp_ttl(0, 1, 60) == 1
    assert clamp_ttl(3600, 1, 60) == 60
    assert clamp_ttl(5, 1, 60) == 5


def test_queries_follow_the_family() -> None:
    plan = addresses_plan("o", "h.", 80, "ipv6")
    assert next(plan) == Query("h.", "AAAA")


def test_fixed_names_answer_for_their_service() -> None:
    from lbclient_dns import DnsSrvRegistry

    consul = DnsSrvRegistry("_orders._tcp.service.consul", nameservers=["127.0.0.1:1"])
    assert consul.name_for("orders") == "_orders._tcp.service.consul"
    kubernetes = DnsSrvRegistry("_http._tcp.orders.shop.svc", nameservers=["127.0.0.1:1"])
    assert kubernetes.name_for("orders") == "_http._tcp.orders.shop.svc"
    template = DnsSrvRegistry("_{service}._tcp.service.consul", nameservers=["127.0.0.1:1"])
    assert template.name_for("pay") == "_pay._tcp.service.consul"
    with pytest.raises(ServiceNotFound, match="resolves only"):
        consul.name_for("payments")


def test_every_priority_as_levels() -> None:
    answers = {
        (NAME, "SRV"): srv((10, 1, 8001, "a."), (20, 1, 8002, "b."), (30, 1, 8003, "c.")),
        ("a.", "A"): a("10.0.0.1"),
        ("b.", "A"): a("10.0.0.2"),
        ("c.", "A"): a("10.0.0.3"),
    }
    result = drive(srv_plan("orders", NAME, "ipv4", every_priority=True), answers)
    assert {(i.port, i.priority) for i in result.instances} == {(8001, 0), (8002, 1), (8003, 2)}
