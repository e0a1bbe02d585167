"""The shortcuts of the per-request path keep what users can observe: the request in the pick
context, the request sent to the instance, and an exact retry budget."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbclient
from lbclient import Endpoint, Failure, Outcome, PickContext, ServiceInstance
from lbclient._retry import RetryBudget
from lbclient.filters import Filter
from lbclient.schedulers.round_robin import RoundRobinScheduler
from lbclient.testing import HTTPBackend
from lbclient.transport import _core

from ._support import Mode, assert_settled, send


class _SeesRequests(RoundRobinScheduler):
    """A custom scheduler (not one of lbclient's): it may read ``context.attributes``."""

    seen: list[Any] = []

    def choose(self, context: PickContext) -> Any:
        self.seen.append(context.attributes.get("request"))
        return super().choose(context)


class _PickListener(lbclient.LoadBalancerListener):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_pick(self, service: str, instance: ServiceInstance, context: PickContext) -> None:
        self.seen.append(context.attributes.get("request"))


def test_a_custom_scheduler_sees_the_request(mode: Mode, backends: list[HTTPBackend]) -> None:
    _SeesRequests.seen = []
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]}, scheduler=_SeesRequests)
    response = send(mode, lb, "GET", "http://orders/items")
    assert [r.url for r in _SeesRequests.seen] == ["http://orders/items"]
    assert _SeesRequests.seen[0] is response.request
    assert_settled(lb)
    lb.close()


def test_a_listener_sees_the_request(mode: Mode, backends: list[HTTPBackend]) -> None:
    listener = _PickListener()
    lb = lbclient.LoadBalancer({"orders": [backends[0].address]}, listeners=[listener])
    response = send(mode, lb, "GET", "http://orders/items")
    assert listener.seen == [response.request]
    lb.close()


def test_keys_still_route_with_a_shared_context(mode: Mode, backends: list[HTTPBackend]) -> None:
    lb = lbclient.LoadBalancer({"orders": [b.address for b in backends]}, scheduler="ring_hash")
    homes = {
        send(mode, lb, "GET", "http://orders/", extensions={"lb_key": "user-7"}).json()["backend"]
        for _ in range(4)
    }
    assert len(homes) == 1  # one key, one instance
    assert_settled(lb)
    lb.close()


_HEADERS: list[list[tuple[str, str | bytes]]] = [
    [],
    [("Host", "orders")],
    [("Accept", "*/*"), ("host", "orders"), ("X-A", "1"), ("HOST", "again")],
    [("X-A", "1"), ("X-B", "é".encode("latin-1"))],
]


@pytest.mark.parametrize("headers", _HEADERS)
@pytest.mark.parametrize("host", [None, b"127.0.0.1:8000", b"[::1]:443"])
@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://orders/p?q=a%20b#f", "https://[::1]:8443/p?q=a%20b#f"),
        ("https://u:p@orders:8443/a/", "https://u:p@[::1]:8443/a/"),
    ],
)
def test_fast_request_copy_matches_the_public_api(
    monkeypatch: pytest.MonkeyPatch,
    headers: list[tuple[str, str | bytes]],
    host: bytes | None,
    url: str,
    sent: str,
) -> None:
    assert _core._FAST_MODELS, "this httpx no longer takes the fast path: see _core"
    request = httpx.Request("GET", url, headers=headers, extensions={"timeout": {}})
    origin = _core._Origin("https", "::1", 8443)
    fast = _core._copy_request(request, origin.rewrite(request.url), host)
    monkeypatch.setattr(_core, "_FAST_MODELS", False)
    public = _core._copy_request(request, origin.rewrite(request.url), host)
    assert fast.url == public.url
    assert str(fast.url) == str(public.url) == sent
    assert fast.headers.raw == public.headers.raw
    assert (fast.method, fast.stream, fast.extensions) == (
        public.method,
        public.stream,
        public.extensions,
    )
    assert vars(fast).keys() == vars(public).keys()
    # Copies: changing what was sent never changes the caller's request.
    assert fast.headers is not request.headers
    assert fast.extensions is not request.extensions
    fast.headers["X-Changed"] = "1"
    fast.extensions["sni_hostname"] = "x"
    assert "X-Changed" not in request.headers
    assert "sni_hostname" not in request.extensions


def test_retry_budget_counts_every_deposit_from_threads() -> None:
    budget = RetryBudget(ratio=0.001, min_per_second=0.0)  # cap 1.0, no trickle
    assert budget.try_withdraw()  # empty it
    assert not budget.try_withdraw()

    def deposit() -> None:
        for _ in range(100):
            budget.deposit()

    threads = [threading.Thread(target=deposit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.balance == pytest.approx(0.8)
    for _ in range(200):
        budget.deposit()
    assert budget.balance == pytest.approx(1.0)  # capped
    assert budget.try_withdraw()
    assert budget.balance == pytest.approx(0.0, abs=1e-9)
    assert budget.exhausted == 1


class _Completions(Filter):
    """A custom filter that overrides only ``on_complete`` (the documented hook)."""

    def __init__(self) -> None:
        self.seen: list[Outcome] = []

    def apply(self, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
        return endpoints

    def on_complete(self, endpoint: Endpoint, outcome: Outcome) -> None:
        self.seen.append(outcome)


def test_a_filter_with_only_on_complete_still_sees_successes_and_failures() -> None:
    feedback = _Completions()
    with lbclient.LoadBalancer(
        {"svc": ["127.0.0.1:1"]}, filters=[lambda: feedback], outlier=None
    ) as lb:
        lb.pick("svc").done()  # the success shortcut: no Outcome unless someone needs one
        lb.pick("svc").done(Failure.SERVER, status=500)
        lb.pick("svc").cancel()
        endpoint = lb.service("svc").endpoints["127.0.0.1:1"]
        assert (endpoint.successes, endpoint.failures, endpoint.in_flight) == (1, 1, 0)
    assert [(o.failure, o.cancelled) for o in feedback.seen] == [
        (None, False),
        (Failure.SERVER, False),
        (None, True),
    ]
    assert feedback.seen[0].latency >= 0.0


class _FailuresOnly(_Completions):
    success_feedback = False


def test_a_filter_without_success_feedback_sees_only_failures_and_cancellations() -> None:
    feedback = _FailuresOnly()
    with lbclient.LoadBalancer(
        {"svc": ["127.0.0.1:1"]}, filters=[lambda: feedback], outlier=None
    ) as lb:
        lb.pick("svc").done()
        lb.pick("svc").done(Failure.SERVER, status=500)
        lb.pick("svc").cancel()
        assert lb.service("svc").endpoints["127.0.0.1:1"].successes == 1
    assert [(o.failure, o.cancelled) for o in feedback.seen] == [
        (Failure.SERVER, False),
        (None, True),
    ]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 120.0), st.floats(0.0, 5.0)),  # (gap since the last, rtt)
        min_size=1,
        max_size=30,
    )
)
def test_the_peak_ewma_of_successes_is_finagles_formula(samples: list[tuple[float, float]]) -> None:
    endpoint = Endpoint(ServiceInstance("svc", "127.0.0.1", 1), decay=10.0)
    cost, stamp, now = 0.0, 0.0, 1000.0
    for gap, rtt in samples:
        now += gap
        endpoint.begin()
        endpoint.succeeded(rtt, now)
        if rtt > cost:
            cost = rtt
        else:
            w = math.exp((stamp - now) / 10.0)
            cost = cost * w + rtt * (1.0 - w)
        stamp = now
        assert endpoint._cost == pytest.approx(cost, rel=1e-8, abs=1e-12)
    assert endpoint.in_flight == 0
    assert endpoint.successes == len(samples)
