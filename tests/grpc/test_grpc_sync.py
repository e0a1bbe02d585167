"""The sync load-balanced channel against real grpcio servers on loopback."""

from __future__ import annotations

import asyncio
import collections
import gc
import threading
from typing import Any

import grpc
import pytest
from lbgrpc_support import in_flight, wait_until
from tenacity import wait_fixed

import lbclient
import lbclient.grpc
import lbclient.grpc.aio
from lbclient import Failure, LBError, LoadBalancerListener, Outcome, RetryPolicy

UNARY = "/lbtest.Echo/Unary"


def stub_for(echo: Any, lb: lbclient.LoadBalancer, **options: Any) -> Any:
    return echo.pb2_grpc.EchoStub(lbclient.grpc.insecure_channel("echo", lb, **options))


def totals(lb: lbclient.LoadBalancer) -> dict[str, dict[str, int]]:
    return {row["id"]: row for row in lb.stats("echo")["instances"]}


class Outcomes(LoadBalancerListener):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Outcome]] = []

    def on_complete(self, service: str, instance: Any, outcome: Outcome) -> None:
        self.seen.append((instance.id, outcome))


def test_round_robin_spreads_unary_calls_per_call(echo, backends, make_lb):
    stub = stub_for(echo, make_lb(backends))
    counts = collections.Counter(stub.Unary(echo.pb2.Request()).backend for _ in range(30))
    assert counts == {"a": 10, "b": 10, "c": 10}


@pytest.mark.parametrize("scheduler", ["random", "least_request", "peak_ewma", "wrr"])
def test_every_scheduler_reaches_every_instance(echo, backends, make_lb, scheduler):
    stub = stub_for(echo, make_lb(backends, scheduler=scheduler))
    counts = collections.Counter(stub.Unary(echo.pb2.Request()).backend for _ in range(90))
    assert set(counts) == {"a", "b", "c"}


def test_hash_key_from_metadata_pins_calls(echo, backends, make_lb):
    stub = stub_for(echo, make_lb(backends, scheduler="ring_hash"))
    for user in ("alice", "bob", "carol", "dave"):
        got = {stub.Unary(echo.pb2.Request(), metadata=[("lb-key", user)]).backend
               for _ in range(5)}  # fmt: skip
        assert len(got) == 1, f"{user} moved between instances: {got}"
    spread = {stub.Unary(echo.pb2.Request(), metadata=[("lb-key", f"u{i}")]).backend
              for i in range(40)}  # fmt: skip
    assert len(spread) > 1


def test_custom_key_function_sees_the_request(echo, backends, make_lb):
    def key(method: str, request: Any, metadata: Any) -> str:
        assert method == UNARY
        return str(request.text)

    stub = stub_for(echo, make_lb(backends, scheduler="maglev"), key=key)
    assert len({stub.Unary(echo.pb2.Request(text="same")).backend for _ in range(6)}) == 1


def test_all_call_types(echo, backends, make_lb):
    lb = make_lb(backends)
    stub = stub_for(echo, lb)
    Request = echo.pb2.Request

    def requests() -> Any:
        return iter([Request(text=t) for t in "xyz"])

    assert stub.Unary(Request(text="u")).text == "u"
    reply, call = stub.Unary.with_call(Request(text="w"))
    assert (reply.text, call.code()) == ("w", grpc.StatusCode.OK)
    assert stub.Unary.future(Request(text="f")).result(5).text == "f"
    assert [r.index for r in stub.ServerStream(Request(count=4))] == [0, 1, 2, 3]
    assert stub.ClientStream(requests()).text == "x+y+z"
    reply, call = stub.ClientStream.with_call(requests())
    assert (reply.text, call.code()) == ("x+y+z", grpc.StatusCode.OK)
    assert stub.ClientStream.future(requests()).result(5).text == "x+y+z"
    assert [r.text for r in stub.BidiStream(requests())] == ["x", "y", "z"]
    assert wait_until(lambda: in_flight(lb) == 0)
    rows = totals(lb).values()
    assert sum(r["successes"] for r in rows) == 8
    assert sum(r["failures"] for r in rows) == 0


def test_metadata_and_registered_methods_round_trip(echo, backends, make_lb):
    stub = stub_for(echo, make_lb(backends))  # generated stubs pass _registered_method=True
    reply, _call = stub.Unary.with_call(echo.pb2.Request(), metadata=[("x-trace", "t-1")])
    assert "x-trace=t-1" in reply.metadata
    stream = stub.ServerStream(echo.pb2.Request(count=1), metadata=[("x-trace", "t-2")])
    assert "x-trace=t-2" in next(iter(stream)).metadata


def test_application_errors_do_not_blame_the_instance(echo, backends, make_lb):
    lb = make_lb(backends)
    stub = stub_for(echo, lb, idempotent="all")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request(abort="NOT_FOUND"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert sum(b.calls for b in backends) == 1, "an application error must not be retried"
    rows = totals(lb).values()
    assert (sum(r["successes"] for r in rows), sum(r["failures"] for r in rows)) == (1, 0)


def test_unavailable_is_retried_on_another_instance_for_idempotent_methods(echo, backends, make_lb):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener])
    backends[0].abort_code = grpc.StatusCode.UNAVAILABLE
    stub = stub_for(echo, lb, idempotent={UNARY})
    answers = {stub.Unary(echo.pb2.Request()).backend for _ in range(12)}
    assert answers == {"b", "c"}
    assert backends[0].calls >= 1
    failures = [o.failure for i, o in listener.seen if i == "a"]
    assert failures
    assert set(failures) == {Failure.GATEWAY}


def test_unavailable_is_not_resent_for_other_methods(echo, backends, make_lb):
    lb = make_lb(backends)
    backends[0].abort_code = grpc.StatusCode.UNAVAILABLE
    stub = stub_for(echo, lb)  # no idempotent methods declared
    codes = []
    for _ in range(6):
        try:
            stub.Unary(echo.pb2.Request())
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    assert codes.count(grpc.StatusCode.UNAVAILABLE) == backends[0].calls >= 1


def test_server_stopped_mid_run_fails_no_idempotent_call(echo, backends, make_lb):
    lb = make_lb(backends, outlier=None)
    stub = stub_for(echo, lb, idempotent="all")
    answers = collections.Counter()
    for i in range(60):
        if i == 20:
            backends[1].stop()
        answers[stub.Unary(echo.pb2.Request(), timeout=5).backend] += 1
    assert answers["a"]
    assert answers["c"]
    assert answers["b"] <= 7
    connect = next(r for r in totals(lb).values() if r["id"] == "b")
    assert connect["failures"] >= 1
    assert in_flight(lb) == 0


def test_connection_refused_is_a_connect_failure_and_retried_for_any_method(
    echo, backends, make_lb
):
    listener = Outcomes()
    backends[2].stop()
    lb = make_lb(backends, listeners=[listener], outlier=None)
    stub = stub_for(echo, lb)  # not idempotent: only "never sent" failures may be retried
    assert {stub.Unary(echo.pb2.Request()).backend for _ in range(9)} == {"a", "b"}
    assert {o.failure for i, o in listener.seen if i == "c"} == {Failure.CONNECT}


def test_no_instance_is_unavailable_naming_the_service(echo):
    lb = lbclient.LoadBalancer({"echo": []})
    stub = echo.pb2_grpc.EchoStub(lbclient.grpc.insecure_channel("echo", lb))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request())
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert isinstance(error, LBError)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "'echo'" in error.details()
    assert error.service == "echo"
    stream = stub.ServerStream(echo.pb2.Request(count=1))  # fails on iteration, as in grpcio
    with pytest.raises(lbclient.NoAvailableInstance):
        next(stream)
    future = stub.Unary.future(echo.pb2.Request())
    assert future.done()
    assert future.exception().code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError):
        future.result()
    unknown = echo.pb2_grpc.EchoStub(lbclient.grpc.insecure_channel("nope", lb))
    with pytest.raises(grpc.RpcError, match="'nope'") as caught:
        unknown.Unary(echo.pb2.Request())
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    lb.close()


def test_deadline_exceeded_is_a_timeout_and_not_retried(echo, backends, make_lb):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener])
    stub = stub_for(echo, lb, idempotent="all")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request(sleep=2), timeout=0.2)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert sum(b.calls for b in backends) == 1
    assert [o.failure for _, o in listener.seen] == [Failure.TIMEOUT]


def test_retries_stay_within_the_callers_deadline(echo, backends, make_lb):
    for backend in backends:
        backend.abort_code = grpc.StatusCode.UNAVAILABLE
    retry = RetryPolicy(attempts=50, wait=wait_fixed(0.1), budget_min_per_second=1000)
    lb = make_lb(backends, outlier=None)
    stub = stub_for(echo, lb, idempotent="all", retry=retry)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request(), timeout=0.25)
    # the last attempt gets only what is left of the deadline: on a slow machine it may end
    # with DEADLINE_EXCEEDED; either way 0.1 s pauses fit at most 3 attempts in 0.25 s
    code = caught.value.code()
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert 1 <= sum(b.calls for b in backends) <= 3
    if code is grpc.StatusCode.UNAVAILABLE:
        assert any("attempt(s)" in note for note in caught.value.__notes__)


class Retries(Outcomes):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, int]] = []

    def on_retry(self, service: str, attempt: int, failure: Any) -> None:
        self.events.append(("retry", attempt))

    def on_retry_refused(self, service: str, attempt: int, failure: Any) -> None:
        self.events.append(("refused", attempt))


@pytest.mark.parametrize("aio", [False, True])
def test_a_plain_calls_retry_state_starts_at_its_first_failure(echo, backends, make_lb, aio):
    """With no limits, breaker or hedging, a call builds its retry state only once its first
    attempt failed: the retry still avoids that instance and the budget still decides (one
    token, none trickling in: one retry in all, then refusals)."""
    for backend in backends:
        backend.abort_code = grpc.StatusCode.UNAVAILABLE
    listener = Retries()
    retry = RetryPolicy(attempts=3, budget_ratio=0.0, budget_min_per_second=0.0)
    lb = make_lb(backends, outlier=None, listeners=[listener], retry=retry)
    request = echo.pb2.Request()

    def call() -> None:
        if not aio:
            stub_for(echo, lb, idempotent="all").Unary(request)
            return

        async def one() -> None:
            async with lbclient.grpc.aio.insecure_channel("echo", lb, idempotent="all") as channel:
                await echo.pb2_grpc.EchoStub(channel).Unary(request)

        asyncio.run(one())

    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert listener.events == [("retry", 1), ("refused", 2), ("refused", 1)]
    assert sum(b.calls for b in backends) == 3
    first, retried = (instance for instance, _ in listener.seen[:2])
    assert first != retried, "the retry went to another instance"


def test_cancelled_stream_releases_its_instance_without_blaming_it(echo, backends, make_lb):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener])
    stub = stub_for(echo, lb)
    call = stub.ServerStream(echo.pb2.Request(count=1000, sleep=0.01))
    next(call)
    assert in_flight(lb) == 1, "a stream holds its instance while it runs"
    call.cancel()
    assert wait_until(lambda: in_flight(lb) == 0)
    assert [o.cancelled for _, o in listener.seen] == [True]


def test_dropped_stream_and_cancelled_future_release_their_instance(echo, backends, make_lb):
    lb = make_lb(backends)
    stub = stub_for(echo, lb)
    call = stub.ServerStream(echo.pb2.Request(count=1000, sleep=0.01))
    next(call)
    del call
    gc.collect()
    assert wait_until(lambda: in_flight(lb) == 0)
    future = stub.Unary.future(echo.pb2.Request(sleep=5))
    future.cancel()
    assert wait_until(lambda: in_flight(lb) == 0)
    assert sum(r["failures"] for r in totals(lb).values()) == 0


def test_bidi_stream_keeps_one_instance_for_its_whole_life(echo, backends, make_lb):
    lb = make_lb(backends)
    stub = stub_for(echo, lb)
    replies = list(stub.BidiStream(iter([echo.pb2.Request(text=str(i)) for i in range(10)])))
    assert len({r.backend for r in replies}) == 1
    assert wait_until(lambda: in_flight(lb) == 0)


class _AddMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self) -> None:
        self.calls = 0

    def _details(self, details: Any) -> Any:
        self.calls += 1
        metadata = [*(details.metadata or ()), ("x-auth", "token")]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(
            details.method, details.timeout, metadata, details.credentials,
            details.wait_for_ready, details.compression)  # fmt: skip

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = (
            credentials, wait_for_ready, compression)  # fmt: skip


def test_composes_with_grpc_intercept_channel(echo, backends, make_lb):
    lb = make_lb(backends)
    interceptor = _AddMetadata()
    channel = grpc.intercept_channel(lbclient.grpc.insecure_channel("echo", lb), interceptor)
    stub = echo.pb2_grpc.EchoStub(channel)
    replies = [stub.Unary(echo.pb2.Request()) for _ in range(3)]
    assert all("x-auth=token" in r.metadata for r in replies)
    assert {r.backend for r in replies} == {"a", "b", "c"}
    assert [r.index for r in stub.ServerStream(echo.pb2.Request(count=2))] == [0, 1]
    assert interceptor.calls == 4
    assert wait_until(lambda: in_flight(lb) == 0)


def test_instance_leaving_closes_its_subchannel_after_its_last_call(echo, backends, make_lb):
    lb = make_lb(backends)
    channel = lbclient.grpc.insecure_channel("echo", lb)
    stub = echo.pb2_grpc.EchoStub(channel)
    for _ in range(3):
        stub.Unary(echo.pb2.Request())
    assert len(channel.pool) == 3
    # a long stream on c, then c leaves the registry's list
    stream = None
    for _ in range(3):
        candidate = stub.ServerStream(echo.pb2.Request(count=5, sleep=0.05))
        first = next(candidate)
        if first.backend == "c":
            stream = candidate
            break
        candidate.cancel()
    assert stream is not None
    retired = channel.pool._leases["c"].channel
    state = lb.service("echo")
    state.publish([e.instance for e in state.endpoints.values() if e.id != "c"])
    assert {stub.Unary(echo.pb2.Request()).backend for _ in range(4)} == {"a", "b"}
    assert channel.pool.addresses() == sorted([backends[0].address, backends[1].address])
    assert [r.index for r in stream] == [1, 2, 3, 4], "the retired sub-channel must drain"
    assert wait_until(lambda: in_flight(lb) == 0)
    stub.Unary(echo.pb2.Request())  # the next call closes what has drained
    with pytest.raises(ValueError, match="closed channel"):
        retired.unary_unary(UNARY)(b"")
    channel.close()


def test_closed_channel_refuses_calls(echo, backends, make_lb):
    lb = make_lb(backends)
    channel = lbclient.grpc.insecure_channel("echo", lb)
    stub = echo.pb2_grpc.EchoStub(channel)
    stub.Unary(echo.pb2.Request())
    channel.close()
    with pytest.raises(LBError, match="closed") as caught:
        stub.Unary(echo.pb2.Request())
    assert isinstance(caught.value, ValueError)  # grpcio raises ValueError on closed channels
    assert in_flight(lb) == 0


def test_channel_ready_future_and_concurrent_callers(echo, backends, make_lb):
    lb = make_lb(backends, scheduler="least_request")
    channel = lbclient.grpc.insecure_channel("echo", lb)
    grpc.channel_ready_future(channel).result(timeout=5)
    stub = echo.pb2_grpc.EchoStub(channel)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                stub.Unary(echo.pb2.Request())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert in_flight(lb) == 0
    assert sum(r["successes"] for r in totals(lb).values()) == 160
    channel.close()


def test_configuration_mistakes_are_reported_up_front(echo, backends, make_lb):
    lb = make_lb(backends)
    with pytest.raises(lbclient.ConfigurationError, match="full names"):
        lbclient.grpc.insecure_channel("echo", lb, idempotent={"Unary"})
    with pytest.raises(lbclient.ConfigurationError, match="LoadBalancer"):
        lbclient.grpc.insecure_channel("echo", object())  # type: ignore[arg-type]


def test_wait_for_ready_and_compression_reach_the_subchannel(echo, backends, make_lb):
    lb = make_lb(backends, outlier=None)
    stub = stub_for(echo, lb)
    reply = stub.Unary(echo.pb2.Request(text="z"), compression=grpc.Compression.Gzip)
    assert reply.text == "z"
    for backend in backends:
        backend.stop()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE  # fails fast by default
    with pytest.raises(grpc.RpcError) as caught:
        stub.Unary(echo.pb2.Request(), timeout=0.3, wait_for_ready=True)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # waited for a connection
    assert in_flight(lb) == 0


def test_server_stream_moves_to_another_instance_until_its_first_message(echo, backends, make_lb):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener], outlier=None)
    backends[0].abort_code = grpc.StatusCode.UNAVAILABLE
    backends[1].stop()
    stub = stub_for(echo, lb, idempotent={"/lbtest.Echo/ServerStream"})
    for _ in range(6):
        call = stub.ServerStream(echo.pb2.Request(count=3))
        replies = list(call)
        assert [r.index for r in replies] == [0, 1, 2]
        assert {r.backend for r in replies} == {"c"}
        assert call.code() is grpc.StatusCode.OK
    failures = {(i, o.failure) for i, o in listener.seen if o.failure is not None}
    assert failures == {("a", Failure.GATEWAY), ("b", Failure.CONNECT)}
    assert wait_until(lambda: in_flight(lb) == 0)


def test_server_stream_of_other_methods_is_resent_only_when_never_sent(echo, backends, make_lb):
    lb = make_lb(backends, outlier=None)
    backends[1].stop()  # connection refused: safe to resend anything
    stub = stub_for(echo, lb)
    assert all(len(list(stub.ServerStream(echo.pb2.Request(count=2)))) == 2 for _ in range(6))
    backends[0].abort_code = grpc.StatusCode.UNAVAILABLE  # answered: not resent
    codes = set()
    for _ in range(6):
        try:
            list(stub.ServerStream(echo.pb2.Request(count=2)))
            codes.add(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.add(exc.code())
    assert grpc.StatusCode.UNAVAILABLE in codes
    assert wait_until(lambda: in_flight(lb) == 0)
