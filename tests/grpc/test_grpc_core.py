"""The no-I/O core shared by the sync and aio channels: outcome mapping, keys, retry decisions."""

from __future__ import annotations

import grpc
import pytest

import lbclient
from lbclient import Failure, RetryPolicy
from lbclient.grpc import failure_for_code, key_from_metadata
from lbclient.grpc._core import ChannelCore, Deadline

S = grpc.StatusCode


@pytest.mark.parametrize(
    ("code", "details", "failure"),
    [
        (S.OK, "", None),
        (S.NOT_FOUND, "no such order", None),
        (S.INVALID_ARGUMENT, "", None),
        (S.PERMISSION_DENIED, "", None),
        (S.RESOURCE_EXHAUSTED, "", None),
        (S.UNIMPLEMENTED, "", None),
        (S.UNAVAILABLE, "failed to connect to all addresses; last error: ...", Failure.CONNECT),
        (S.UNAVAILABLE, "Socket closed", Failure.RESET),
        (S.UNAVAILABLE, "Connection reset by peer", Failure.RESET),
        (S.UNAVAILABLE, "draining, try again", Failure.GATEWAY),
        (S.DEADLINE_EXCEEDED, "Deadline Exceeded", Failure.TIMEOUT),
        (S.INTERNAL, "", Failure.SERVER),
        (S.UNKNOWN, "Exception calling application", Failure.SERVER),
        (S.DATA_LOSS, "", Failure.SERVER),
    ],
)
def test_status_codes_map_to_failure_kinds(code, details, failure):
    assert failure_for_code(code, details) is failure


def test_key_from_metadata_is_case_insensitive_on_the_name():
    key = key_from_metadata("X-User")
    assert key("/a/B", None, [("x-user", "u1"), ("other", "x")]) == "u1"
    assert key("/a/B", None, None) is None
    assert key("/a/B", None, [("other", "x")]) is None


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.fixture
def lb():
    balancer = lbclient.LoadBalancer(
        {"svc": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}, outlier=None
    )
    yield balancer
    balancer.close()


def attempt(core: ChannelCore, lb: lbclient.LoadBalancer, method: str, error: _Error) -> bool:
    state = lb.service("svc")
    retry = core.start(state, method, None, None, replayable=True)
    handle = core.pick(state, retry)
    return core.after_error(handle, retry, error, Deadline(None)) is not None


def test_retry_decisions_follow_idempotency(lb):
    core = ChannelCore(lb, "svc", idempotent={"/a.S/Get"})
    refused = _Error(S.UNAVAILABLE, "failed to connect to all addresses")
    gateway = _Error(S.UNAVAILABLE, "overloaded")
    assert attempt(core, lb, "/a.S/Put", refused), "never sent: safe for any method"
    assert not attempt(core, lb, "/a.S/Put", gateway), "maybe processed: only idempotent"
    assert attempt(core, lb, "/a.S/Get", gateway)
    assert not attempt(core, lb, "/a.S/Get", _Error(S.DEADLINE_EXCEEDED, ""))
    assert not attempt(core, lb, "/a.S/Get", _Error(S.NOT_FOUND, ""))
    everything = ChannelCore(lb, "svc", idempotent="all")
    assert attempt(everything, lb, "/a.S/Put", gateway)
    none = ChannelCore(lb, "svc", idempotent="all", retry=RetryPolicy(attempts=1))
    assert not attempt(none, lb, "/a.S/Put", refused)
    assert all(row["in_flight"] == 0 for row in lb.stats("svc")["instances"])


def test_a_spent_deadline_stops_retries(lb):
    core = ChannelCore(lb, "svc", idempotent="all")
    state = lb.service("svc")
    retry = core.start(state, "/a.S/Get", None, None, replayable=True)
    handle = core.pick(state, retry)
    assert core.after_error(handle, retry, _Error(S.UNAVAILABLE, ""), Deadline(0.0)) is None


def test_retries_avoid_instances_already_tried(lb):
    core = ChannelCore(lb, "svc", idempotent="all")
    state = lb.service("svc")
    retry = core.start(state, "/a.S/Get", None, None, replayable=True)
    tried = set()
    for _ in range(3):
        handle = core.pick(state, retry)
        tried.add(handle.instance.id)
        handle.done()
    assert len(tried) == 3


def test_configuration_errors_name_the_fix(lb):
    with pytest.raises(lbclient.ConfigurationError, match="'all'"):
        ChannelCore(lb, "svc", idempotent="some")
    with pytest.raises(lbclient.ConfigurationError, match="non-empty"):
        ChannelCore(lb, "")
