"""A reloaded static file is read entry by entry: a bad entry is skipped (logged once, counted
in stats()), the others apply. A mapping given in code stays strict: a bad entry fails at
startup. Fuzzed with hypothesis."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient.registry.static import StaticRegistry, reload_instances

from .test_static_registry import rewrite, wait_for

BAD = ["10.0.0.1:80:90", "h:٨٠", "bad host:1", "user@evil.example:1", "h\r\n:1", "h:0", 5, None]


@pytest.mark.parametrize("bad", BAD)
def test_code_mappings_stay_strict(bad: Any) -> None:
    with pytest.raises(lbclient.ConfigurationError, match="orders"):
        StaticRegistry({"orders": ["127.0.0.1:1", bad]})


@pytest.mark.parametrize("bad", BAD)
def test_a_reloaded_entry_that_is_bad_is_skipped(bad: Any, tmp_path: Path) -> None:
    instances = reload_instances("orders", ["127.0.0.1:1", bad, "127.0.0.1:2"], tmp_path)
    assert [i.port for i in instances] == [1, 2]
    assert len(instances.skipped) == 1


def test_duplicates_are_skipped_and_a_non_list_is_malformed(tmp_path: Path) -> None:
    instances = reload_instances("orders", "127.0.0.1:1, 127.0.0.1:1,127.0.0.1:2", tmp_path)
    assert [i.port for i in instances] == [1, 2]
    assert "duplicate" in instances.skipped[0].reason
    with pytest.raises(lbclient.ConfigurationError, match="must map to a list"):
        reload_instances("orders", {"host": "h", "port": 1}, tmp_path)
    with pytest.raises(lbclient.RegistryUnavailable, match="all 1 entries are invalid"):
        reload_instances("orders", ["h:0"], tmp_path)


ENTRY = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["127.0.0.1:9", "[::1]:9", "h.example:9", "https://h:443", "h:٨٠"]),
    st.integers(),
    st.none(),
    st.dictionaries(
        st.sampled_from(["host", "port", "weight", "tags", "metadata", "id", "zone", "x"]),
        st.one_of(st.text(max_size=8), st.integers(-5, 70000), st.floats(), st.none()),
        max_size=4,
    ),
)


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(ENTRY, max_size=5), valid=st.integers(min_value=0, max_value=3))
def test_fuzzed_files_parse_entry_by_entry(entries: list[Any], valid: int) -> None:
    good = [f"127.0.0.1:{n + 1}" for n in range(valid)]
    mixed = json.loads(json.dumps(good + entries))
    try:
        instances = reload_instances("orders", mixed, Path("f.json"))
    except lbclient.RegistryUnavailable as exc:
        error: Exception | None = exc
    else:
        error = None
    if error is not None:
        assert not good
        return
    ids = [i.id for i in instances]
    assert set(good) <= set(ids)
    assert len(ids) == len(set(ids))
    assert len(instances) + len(instances.skipped) == len(mixed)


def test_a_reload_applies_the_good_entries_and_counts_the_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"orders": ["127.0.0.1:1"]}))
    registry = StaticRegistry.from_file(path, reload_interval=0.02)
    with caplog.at_level(logging.WARNING, logger="lbclient"), lbclient.LoadBalancer(registry) as lb:
        lb.service("orders")
        rewrite(path, {"orders": ["127.0.0.1:2", "10.0.0.1:80:90", "127.0.0.1:3"]}, 1)
        wait_for(lambda: len(lb.stats("orders")["instances"]) == 2)
        stats = lb.stats("orders")
        time.sleep(0.1)  # a few more reload periods: the bad entry is not logged again
        rewrite(path, {"orders": ["127.0.0.1:2", "10.0.0.1:80:90", "127.0.0.1:4"]}, 2)
        wait_for(lambda: "127.0.0.1:4" in {r["id"] for r in lb.stats("orders")["instances"]})
    assert sorted(r["id"] for r in stats["instances"]) == ["127.0.0.1:2", "127.0.0.1:3"]
    assert stats["skipped_entries"] == 1
    assert stats["registry_error"] is None
    assert caplog.text.count("registry entry '10.0.0.1:80:90' skipped") == 0
    assert caplog.text.count("registry entry 10.0.0.1:80:90 skipped") == 1
