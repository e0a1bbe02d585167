"""Many watched services, few threads: every sync watch is a task of the one shared loop.

A gateway watching 50 services must not run 50 threads. The watches still see each change of
their own service, and closing (or dropping) the balancer stops every one of them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from consul_helpers import lbclient_threads, wait_until

import lbclient
from lbclient.consul import ConsulRegistry
from lbclient.registry._loop import SharedLoop
from lbclient.testing.consul import ConsulTestServer

SERVICES = [f"svc-{n:02d}" for n in range(50)]


def put(agent: Any, service: str, instance: int) -> None:
    agent.agent.service.register(
        service, service_id=f"{service}-{instance}", address="127.0.0.1", port=9000 + instance
    )


def ports(lb: lbclient.LoadBalancer, service: str) -> set[int]:
    return {e.instance.port for e in lb.service(service).endpoints.values()}


def watching(lb: lbclient.LoadBalancer) -> None:
    for service in SERVICES:
        lb.pick(service).done()


@pytest.fixture
def scene(agent: Any) -> None:
    for service in SERVICES:
        put(agent, service, 1)


def registry(server: ConsulTestServer) -> ConsulRegistry:
    return ConsulRegistry(port=server.port, wait="5s", min_backoff=0.02, max_backoff=0.2)


def test_fifty_watched_services_share_one_thread_and_see_their_changes(
    server: ConsulTestServer, agent: Any, scene: None
) -> None:
    assert lbclient_threads() == []
    with lbclient.LoadBalancer(registry(server)) as lb:
        watching(lb)
        threads = lbclient_threads()
        assert threads.count("lbclient-watch-loop") == 1
        assert len(threads) <= 2, threads  # the loop, and outlier detection's shared timer
        watches = [n for n in SharedLoop.task_names() if n.startswith("lbclient-watch-")]
        assert watches == [f"lbclient-watch-consul:{s}" for s in SERVICES]
        for service in SERVICES[::7]:
            put(agent, service, 2)
        for service in SERVICES:
            expected = {9001, 9002} if service in SERVICES[::7] else {9001}
            wait_until(lambda service=service, expected=expected: ports(lb, service) == expected)
        assert len(lbclient_threads()) <= 2
    assert lbclient_threads() == []
    assert SharedLoop.task_names() == []


def test_two_balancers_share_the_loop_and_each_close_stops_only_its_watches(
    server: ConsulTestServer, agent: Any, scene: None
) -> None:
    first = lbclient.LoadBalancer(registry(server))
    second = lbclient.LoadBalancer(registry(server))
    watching(first)
    second.pick(SERVICES[0]).done()
    assert lbclient_threads().count("lbclient-watch-loop") == 1
    first.close()
    assert SharedLoop.task_names() == [f"lbclient-watch-consul:{SERVICES[0]}"]
    put(agent, SERVICES[0], 2)
    wait_until(lambda: ports(second, SERVICES[0]) == {9001, 9002})
    second.close()
    assert lbclient_threads() == []


def test_a_dropped_balancer_stops_all_fifty_watches(
    server: ConsulTestServer, agent: Any, scene: None
) -> None:
    lb = lbclient.LoadBalancer(registry(server))
    watching(lb)
    assert len(SharedLoop.task_names()) == len(SERVICES)
    with pytest.warns(ResourceWarning):
        del lb
    assert lbclient_threads() == []
    time.sleep(0.3)  # queries sent just before the close may still be reaching the server
    queries = sum(server.requests.values())
    time.sleep(0.5)
    assert sum(server.requests.values()) == queries


def test_a_balancer_closed_on_its_own_watch_loop_does_not_wait_for_itself(
    server: ConsulTestServer, agent: Any, scene: None
) -> None:
    """A listener that closes the balancer runs on the watch loop: close must neither wait
    for that loop (a deadlock) nor leave its thread behind."""
    closed = threading.Event()

    class Closer(lbclient.LoadBalancerListener):
        def on_instances(self, service: str, usable: Any) -> None:
            if threading.current_thread().name == "lbclient-watch-loop":
                lb.close()
                closed.set()

    lb = lbclient.LoadBalancer(registry(server), listeners=[Closer()])
    lb.pick(SERVICES[0]).done()  # the first list is applied on this thread
    put(agent, SERVICES[0], 2)  # the next one on the loop, which closes the balancer
    assert closed.wait(10)
    wait_until(lambda: lbclient_threads() == [])
