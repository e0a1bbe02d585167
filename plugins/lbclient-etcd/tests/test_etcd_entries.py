"""etcd values read key by key: a malformed value is skipped and counted, the other keys
apply, through a range read and through watch events. Fuzzed with hypothesis, plus a real
etcd holding a bad value next to a good one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lbclient_etcd import EtcdRegistry
from lbclient_etcd._protocol import Snapshot, b64, watch_step
from lbclient_etcd.testing import EtcdServer

import lbclient

PREFIX = b"/services/orders/"


def kv(name: str, value: bytes) -> dict[str, Any]:
    return {"key": b64(PREFIX + name.encode()), "value": b64(value), "mod_revision": "9"}


GOOD = json.dumps({"host": "10.0.0.1", "port": 80}).encode()

FIELD_VALUES = st.one_of(
    st.none(),
    st.integers(-5, 70000),
    st.text(max_size=10),
    st.floats(),
    st.lists(st.text(max_size=3), max_size=2),
    st.sampled_from(["abc", "h:٨٠"]),
)
REPRODUCED = [
    b"null", b"[]", b'{"host": "10.0.0.1:80:90", "port": 1}', b'{"Addr": "h:1:2"}',
    b'{"host": "h", "port": "80"}', b'{"host": "h", "port": 1, "tags": "abc"}',
    b'{"host": "h", "port": 1, "weight": 1e308}', b'{"host": "a b", "port": 1}',
]  # fmt: skip
VALUES = st.one_of(
    st.binary(max_size=30),
    st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(["host", "port", "weight", "tags", "metadata", "Addr", "address"]),
            FIELD_VALUES,
            max_size=4,
        ),
    ),
    st.sampled_from(REPRODUCED),
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(VALUES, max_size=4), garbage_kv=st.booleans())
def test_fuzzed_values_are_read_key_by_key(values: list[bytes], garbage_kv: bool) -> None:
    kvs: list[Any] = [kv("good", GOOD)] + [kv(f"k{n}", v) for n, v in enumerate(values)]
    if garbage_kv:
        kvs.append({"key": "%%%not base64", "value": None})
    snapshot = Snapshot.from_range("orders", PREFIX, {"header": {"revision": "9"}, "kvs": kvs})
    ordered = snapshot.ordered
    assert "good" in {i.id for i in ordered}
    assert len(ordered) + len(ordered.skipped) == len(kvs)
    # the same keys through watch events, on top of an empty snapshot
    empty = Snapshot("orders", PREFIX, 1, {})
    step = watch_step(empty, {"result": {"events": [{"kv": k} for k in kvs]}})
    assert step.snapshot.ordered == ordered
    assert len(step.snapshot.ordered.skipped) == len(ordered.skipped)


def test_a_bad_put_is_skipped_then_a_good_put_or_a_delete_clears_it() -> None:
    start = Snapshot.from_range("orders", PREFIX, {"kvs": [kv("a", GOOD)]})
    bad = watch_step(start, {"result": {"events": [{"kv": kv("b", b'{"Addr": "h:1:2"}')}]}})
    assert bad.changed  # nothing new to use, but a new skipped entry to count
    assert [s.entry for s in bad.snapshot.ordered.skipped] == ["etcd key '/services/orders/b'"]
    fixed = watch_step(bad.snapshot, {"result": {"events": [{"kv": kv("b", GOOD)}]}})
    assert [i.id for i in fixed.snapshot.ordered] == ["a", "b"]
    assert fixed.snapshot.ordered.skipped == ()
    again = watch_step(fixed.snapshot, {"result": {"events": [{"kv": kv("b", b"x")}]}})
    assert [i.id for i in again.snapshot.ordered] == ["a"]  # a bad PUT replaces the instance
    deleted = watch_step(
        again.snapshot, {"result": {"events": [{"type": "DELETE", "kv": kv("b", b"")}]}}
    )
    assert deleted.snapshot.ordered.skipped == ()


def test_a_balancer_over_real_etcd_uses_the_good_key_and_counts_the_bad(etcd: EtcdServer) -> None:
    for name, value in (("good", GOOD), ("bad", b'{"host": "user@evil.example", "port": 1}')):
        etcd.call("/v3/kv/put", {"key": b64(PREFIX + name.encode()), "value": b64(value)})
    registry = EtcdRegistry(etcd.url)
    with lbclient.LoadBalancer(registry) as lb:
        lb.service("orders")
        stats = lb.stats("orders")
    registry.close()
    assert [row["id"] for row in stats["instances"]] == ["good"]
    assert stats["skipped_entries"] == 1
    for name in ("good", "bad"):
        etcd.call("/v3/kv/deleterange", {"key": b64(PREFIX + name.encode())})


def test_messages_malformed_as_a_whole_are_registry_unavailable() -> None:
    start = Snapshot.from_range("orders", PREFIX, {"kvs": [kv("a", GOOD)]})
    for message in (
        {"result": []},
        {"result": {"events": ["x"]}},
        {"result": {"events": [{"kv": {"key": b64(b"k"), "mod_revision": "x"}}]}},
        {"result": {"header": {"revision": "many"}}},
    ):
        with pytest.raises(lbclient.RegistryUnavailable, match="malformed watch message"):
            watch_step(start, message)  # type: ignore[arg-type]
    for answer in ({"kvs": "x"}, {"header": "x"}, {"header": {"revision": "x"}}):
        with pytest.raises(lbclient.RegistryUnavailable, match="malformed answer"):
            Snapshot.from_range("orders", PREFIX, answer)


def test_only_garbage_under_the_prefix_is_a_malformed_answer() -> None:
    snapshot = Snapshot.from_range("orders", PREFIX, {"kvs": [kv("a", b"x"), kv("b", b"[]")]})
    assert snapshot.ordered == ()
    with pytest.raises(lbclient.RegistryUnavailable, match="all 2 entries are invalid"):
        _ = snapshot.usable
    assert Snapshot("orders", PREFIX, 1, {}).usable == ()  # nothing registered: a valid answer
