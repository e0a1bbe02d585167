"""The shortcuts of the per-request path keep what users can observe: the request in the pick
context, the request sent to the instance, and an exact retry budget."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

import lbclient
from lbclient import PickContext, ServiceInstance
from lbclient._retry import RetryBudget
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
