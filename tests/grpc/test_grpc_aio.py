"""The grpc.aio load-balanced channel against real grpcio servers on loopback."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import grpc
import grpc.aio
import pytest
from lbgrpc_support import in_flight
from tenacity import wait_fixed

import lbclient
import lbclient.grpc.aio
from lbclient import Failure, LBError, LoadBalancerListener, Outcome, RetryPolicy

UNARY = "/lbtest.Echo/Unary"
S = grpc.StatusCode


class Outcomes(LoadBalancerListener):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Outcome]] = []

    def on_complete(self, service: str, instance: Any, outcome: Outcome) -> None:
        self.seen.append((instance.id, outcome))


async def eventually(predicate: Any) -> bool:
    """Poll ``predicate`` for up to 2 s (done callbacks run on the loop, a bit later)."""
    for _ in range(200):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return False


async def settled(lb: lbclient.LoadBalancer) -> bool:
    """Every in-flight slot released (no leak)."""
    return await eventually(lambda: in_flight(lb) == 0)


@pytest.fixture
async def open_channel():
    opened: list[lbclient.grpc.aio.LoadBalancedAioChannel] = []

    def make(lb: lbclient.LoadBalancer, **options: Any) -> Any:
        channel = lbclient.grpc.aio.insecure_channel("echo", lb, **options)
        opened.append(channel)
        return channel

    yield make
    for channel in opened:
        await channel.close()


async def test_round_robin_spreads_unary_calls(echo, backends, make_lb, open_channel):
    stub = echo.pb2_grpc.EchoStub(open_channel(make_lb(backends)))
    replies = [await stub.Unary(echo.pb2.Request()) for _ in range(30)]
    assert collections.Counter(r.backend for r in replies) == {"a": 10, "b": 10, "c": 10}


@pytest.mark.parametrize("scheduler", ["random", "least_request", "twos"])
async def test_every_scheduler_reaches_every_instance(
    echo, backends, make_lb, open_channel, scheduler
):
    stub = echo.pb2_grpc.EchoStub(open_channel(make_lb(backends, scheduler=scheduler)))
    replies = await asyncio.gather(*(stub.Unary(echo.pb2.Request()) for _ in range(90)))
    assert {r.backend for r in replies} == {"a", "b", "c"}


async def test_all_call_types(echo, backends, make_lb, open_channel):
    lb = make_lb(backends)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    Request = echo.pb2.Request

    async def requests() -> Any:
        for text in "xyz":
            yield Request(text=text)

    assert (await stub.Unary(Request(text="u"))).text == "u"
    assert [r.index async for r in stub.ServerStream(Request(count=3))] == [0, 1, 2]
    assert (await stub.ClientStream(requests())).text == "x+y+z"
    assert [r.text async for r in stub.BidiStream(requests())] == ["x", "y", "z"]
    call = stub.BidiStream()  # reader/writer style
    await call.write(Request(text="w"))
    assert (await call.read()).text == "w"
    await call.done_writing()
    assert await call.code() is grpc.StatusCode.OK
    assert await settled(lb)
    rows = lb.stats("echo")["instances"]
    assert sum(r["successes"] for r in rows) == 5
    assert sum(r["failures"] for r in rows) == 0


async def test_unary_call_object_and_metadata(echo, backends, make_lb, open_channel):
    stub = echo.pb2_grpc.EchoStub(open_channel(make_lb(backends)))
    done = asyncio.Event()
    call = stub.Unary(echo.pb2.Request(text="m"), metadata=(("x-trace", "t-1"),), timeout=5)
    call.add_done_callback(lambda _: done.set())
    reply = await call
    assert "x-trace=t-1" in reply.metadata
    assert await call.code() is grpc.StatusCode.OK
    assert await call.details() in ("", None)
    assert await call.initial_metadata() is not None
    await done.wait()
    assert call.done()
    assert not call.cancelled()


async def test_unavailable_is_retried_elsewhere_for_idempotent_methods(
    echo, backends, make_lb, open_channel
):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener])
    backends[0].abort_code = grpc.StatusCode.UNAVAILABLE
    stub = echo.pb2_grpc.EchoStub(open_channel(lb, idempotent={UNARY}))
    replies = [await stub.Unary(echo.pb2.Request()) for _ in range(12)]
    assert {r.backend for r in replies} == {"b", "c"}
    assert {o.failure for i, o in listener.seen if i == "a"} == {Failure.GATEWAY}


async def test_application_error_reaches_the_caller_as_a_success(
    echo, backends, make_lb, open_channel
):
    lb = make_lb(backends)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb, idempotent="all"))
    call = stub.Unary(echo.pb2.Request(abort="INVALID_ARGUMENT"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await call.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert sum(b.calls for b in backends) == 1
    assert sum(r["failures"] for r in lb.stats("echo")["instances"]) == 0


async def test_server_stopped_mid_run_fails_no_idempotent_call(
    echo, backends, make_lb, open_channel
):
    lb = make_lb(backends, outlier=None)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb, idempotent="all"))
    answers = collections.Counter()
    for i in range(45):
        if i == 15:
            backends[2].stop()
        answers[(await stub.Unary(echo.pb2.Request(), timeout=5)).backend] += 1
    assert answers["a"] > 10
    assert answers["b"] > 10
    assert answers["c"] <= 5
    assert await settled(lb)


async def test_no_instance_is_unavailable_naming_the_service(echo, open_channel):
    lb = lbclient.LoadBalancer({"echo": []})
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Unary(echo.pb2.Request())
    error = caught.value
    assert isinstance(error, LBError)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "'echo'" in error.details()
    call = stub.Unary(echo.pb2.Request())
    with pytest.raises(grpc.RpcError):
        await call
    assert await call.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(lbclient.NoAvailableInstance):
        stub.ServerStream(echo.pb2.Request(count=1))
    lb.close()


async def test_deadline_is_a_timeout_and_bounds_retries(echo, backends, make_lb, open_channel):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener], outlier=None)
    retry = RetryPolicy(attempts=50, wait=wait_fixed(0.1), budget_min_per_second=1000)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb, idempotent="all", retry=retry))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Unary(echo.pb2.Request(sleep=2), timeout=0.2)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert [o.failure for _, o in listener.seen] == [Failure.TIMEOUT]
    for backend in backends:
        backend.abort_code = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Unary(echo.pb2.Request(), timeout=0.25)
    # the last attempt gets only what is left of the deadline, so on a slow machine it may
    # end with DEADLINE_EXCEEDED; either way 0.1 s pauses fit at most 3 attempts in 0.25 s
    assert caught.value.code() in (S.UNAVAILABLE, S.DEADLINE_EXCEEDED)
    assert 2 <= sum(b.calls for b in backends) <= 4  # 1 above + 1-3 attempts


async def test_cancellation_releases_the_instance_without_blaming_it(
    echo, backends, make_lb, open_channel
):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener])
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    task = asyncio.ensure_future(stub.Unary(echo.pb2.Request(sleep=5)))
    assert await eventually(lambda: in_flight(lb) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await settled(lb)
    call = stub.Unary(echo.pb2.Request(sleep=5))
    await asyncio.sleep(0.05)
    assert call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert call.cancelled()
    assert await call.code() is grpc.StatusCode.CANCELLED
    stream = stub.ServerStream(echo.pb2.Request(count=1000, sleep=0.01))
    await stream.read()
    stream.cancel()
    assert await settled(lb)
    assert {o.cancelled for _, o in listener.seen} == {True}


class _AddMetadata:
    """grpc.aio files an interceptor under its first matching kind only: one class per kind."""

    def __init__(self) -> None:
        self.calls = 0

    def _details(self, details: Any) -> Any:
        self.calls += 1
        metadata = grpc.aio.Metadata(*(details.metadata or ()), ("x-auth", "token"))
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )


class _UnaryAdd(_AddMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamAdd(_AddMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


async def test_composes_with_aio_interceptors(echo, backends, make_lb, open_channel):
    lb = make_lb(backends)
    unary, stream = _UnaryAdd(), _StreamAdd()
    stub = echo.pb2_grpc.EchoStub(open_channel(lb, interceptors=[unary, stream]))
    replies = [await stub.Unary(echo.pb2.Request()) for _ in range(3)]
    assert all("x-auth=token" in r.metadata for r in replies)
    assert {r.backend for r in replies} == {"a", "b", "c"}
    streamed = [r async for r in stub.ServerStream(echo.pb2.Request(count=2))]
    assert "x-auth=token" in streamed[0].metadata
    assert (unary.calls, stream.calls) == (3, 1)
    assert await settled(lb)


async def test_channel_state_and_close_with_a_retired_subchannel(echo, backends, make_lb):
    lb = make_lb(backends)
    channel = lbclient.grpc.aio.insecure_channel("echo", lb)
    assert channel.get_state() is grpc.ChannelConnectivity.IDLE
    await channel.channel_ready()
    assert channel.get_state() is grpc.ChannelConnectivity.READY
    stub = echo.pb2_grpc.EchoStub(channel)
    for _ in range(3):
        await stub.Unary(echo.pb2.Request())
    state = lb.service("echo")
    state.publish([e.instance for e in state.endpoints.values() if e.id != "a"])
    assert {(await stub.Unary(echo.pb2.Request())).backend for _ in range(4)} == {"b", "c"}
    assert channel.pool.addresses() == sorted([backends[1].address, backends[2].address])
    await channel.close()
    with pytest.raises(lbclient.ConfigurationError, match="closed"):
        await stub.Unary(echo.pb2.Request())
    assert in_flight(lb) == 0


async def test_hash_key_from_metadata_pins_calls(echo, backends, make_lb, open_channel):
    stub = echo.pb2_grpc.EchoStub(open_channel(make_lb(backends, scheduler="ring_hash")))
    for user in ("alice", "bob", "carol"):
        replies = [
            await stub.Unary(echo.pb2.Request(), metadata=(("lb-key", user),)) for _ in range(4)
        ]
        assert len({r.backend for r in replies}) == 1


async def test_a_call_nobody_awaits_still_runs_and_reports(echo, backends, make_lb, open_channel):
    lb = make_lb(backends)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    call = stub.Unary(echo.pb2.Request())
    assert await eventually(call.done)
    assert await settled(lb)
    assert sum(r["successes"] for r in lb.stats("echo")["instances"]) == 1


async def test_server_stream_moves_until_its_first_message(echo, backends, make_lb, open_channel):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener], outlier=None)
    backends[0].abort_code = grpc.StatusCode.UNAVAILABLE
    backends[1].stop()
    stub = echo.pb2_grpc.EchoStub(open_channel(lb, idempotent={"/lbtest.Echo/ServerStream"}))
    for _ in range(3):
        call = stub.ServerStream(echo.pb2.Request(count=3))
        replies = [r async for r in call]
        assert [(r.backend, r.index) for r in replies] == [("c", 0), ("c", 1), ("c", 2)]
        assert await call.code() is grpc.StatusCode.OK
    for _ in range(3):  # read() style
        call = stub.ServerStream(echo.pb2.Request(count=2))
        assert (await call.read()).backend == "c"
        assert (await call.read()).index == 1
        assert await call.read() is grpc.aio.EOF
    failures = {(i, o.failure) for i, o in listener.seen if o.failure is not None}
    assert failures == {("a", Failure.GATEWAY), ("b", Failure.CONNECT)}
    assert await settled(lb)


def _call_tasks() -> list[asyncio.Task[Any]]:
    """Tasks running a RetryingUnaryCall's attempts (grpcio's own per-call task aside)."""
    return [t for t in asyncio.all_tasks() if "RetryingUnaryCall" in repr(t.get_coro())]


async def test_a_call_awaited_at_once_runs_in_its_awaiter_and_can_be_cancelled(
    echo, backends, make_lb, open_channel
):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener])
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    await stub.Unary(echo.pb2.Request())  # resolves the service
    ended = asyncio.Event()
    seen: list[list[asyncio.Task[Any]]] = []

    async def cancel_it() -> None:
        assert await eventually(lambda: in_flight(lb) == 1)
        seen.append(_call_tasks())
        call.add_done_callback(lambda _: ended.set())
        assert not call.done()
        assert call.cancel()

    canceller = asyncio.create_task(cancel_it())
    call = stub.Unary(echo.pb2.Request(sleep=5))
    with pytest.raises(asyncio.CancelledError):
        await call
    await canceller
    assert seen == [[]]  # no task of ours: the awaiter ran the attempt
    await asyncio.wait_for(ended.wait(), 5)
    assert call.done()
    assert call.cancelled()
    assert await call.code() is S.CANCELLED
    assert not call.cancel()  # already over
    assert await settled(lb)
    assert listener.seen[-1][1].cancelled


async def test_a_call_awaited_twice_answers_both(echo, backends, make_lb, open_channel):
    lb = make_lb(backends)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    await stub.Unary(echo.pb2.Request())
    call = stub.Unary(echo.pb2.Request(text="twice", sleep=0.05))

    async def wait_for_it() -> Any:
        return await call

    second = asyncio.create_task(wait_for_it())  # starts after the first await below
    first = await call
    assert (await second).text == first.text == "twice"
    assert await call == first  # a finished call answers again, as a task would
    assert await settled(lb)


async def test_a_driven_call_cancelled_in_its_retry_pause_reports_once(
    echo, backends, make_lb, open_channel
):
    lb = make_lb(backends, outlier=None)
    retry = RetryPolicy(attempts=3, wait=wait_fixed(5))
    stub = echo.pb2_grpc.EchoStub(open_channel(lb, idempotent={UNARY}, retry=retry))
    await stub.Unary(echo.pb2.Request())
    for backend in backends:
        backend.abort_code = grpc.StatusCode.UNAVAILABLE

    async def cancel_in_pause() -> None:
        assert await eventually(lambda: sum(b.calls for b in backends) >= calls + 1)
        assert await eventually(lambda: in_flight(lb) == 0)  # the first attempt reported
        seen.append(_call_tasks())
        assert call.cancel()

    calls = sum(b.calls for b in backends)
    seen: list[list[asyncio.Task[Any]]] = []
    canceller = asyncio.create_task(cancel_in_pause())
    call = stub.Unary(echo.pb2.Request())
    with pytest.raises(asyncio.CancelledError):
        await call  # driven here; its pause runs in a task that cancel() reaches
    await canceller
    assert len(seen[0]) == 1
    assert call.cancelled()
    assert sum(b.calls for b in backends) == calls + 1  # the retry never started
    assert await settled(lb)


async def test_a_dropped_call_still_runs_reports_and_releases(
    echo, backends, make_lb, open_channel
):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener])
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    await stub.Unary(echo.pb2.Request())  # resolves the service: later calls start at once
    stub.Unary(echo.pb2.Request(text="dropped", sleep=0.1))  # nobody keeps it
    assert await eventually(lambda: len(listener.seen) == 2)
    assert await settled(lb)
    assert sum(b.calls for b in backends) == 2
    assert [o.failure for _, o in listener.seen] == [None, None]
    assert not any(o.cancelled for _, o in listener.seen)


async def test_a_held_call_is_reported_when_its_attempt_ends_not_when_awaited(
    echo, backends, make_lb, open_channel
):
    lb = make_lb(backends)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    await stub.Unary(echo.pb2.Request())  # resolves the service
    successes = lambda: sum(r["successes"] for r in lb.stats("echo")["instances"])  # noqa: E731
    call = stub.Unary(echo.pb2.Request(text="held"))  # kept, not awaited nor asked anything
    assert await eventually(lambda: successes() == 2)  # reported while still held
    assert in_flight(lb) == 0  # its instance is free again
    assert (await call).text == "held"
    assert await call.code() is S.OK
    assert successes() == 2  # reported once


async def test_a_dropped_call_whose_first_attempt_cannot_connect_is_retried(
    echo, backends, make_lb, open_channel
):
    listener = Outcomes()
    down, up = backends[0], backends[2]
    lb = make_lb([down, up], listeners=[listener], outlier=None)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))  # not idempotent: only CONNECT retried
    await stub.Unary(echo.pb2.Request())  # resolves the service
    down.stop()
    before = up.calls
    for _ in range(2):  # round robin: one of them tries the stopped server first
        stub.Unary(echo.pb2.Request())
    assert await eventually(lambda: up.calls == before + 2)
    assert await settled(lb)
    assert await eventually(lambda: sum(o.failure is None for _, o in listener.seen) == 3)
    assert {(i, o.failure) for i, o in listener.seen if o.failure} == {("a", Failure.CONNECT)}


async def test_a_pick_error_is_raised_at_await_not_when_the_call_is_made(echo, backends, make_lb):
    lb = make_lb(backends)
    channel = lbclient.grpc.aio.insecure_channel("echo", lb)
    stub = echo.pb2_grpc.EchoStub(channel)
    await stub.Unary(echo.pb2.Request())  # resolves the service
    state = lb.service("echo")
    instances = [e.instance for e in state.endpoints.values()]
    state.publish([])
    call = stub.Unary(echo.pb2.Request())  # the pick fails: nothing raised yet
    assert call.done()
    assert not call.cancelled()
    assert not call.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert isinstance(caught.value, LBError)
    assert await call.code() is S.UNAVAILABLE
    assert "'echo'" in await call.details()
    state.publish(instances)
    await channel.close()
    closed = stub.Unary(echo.pb2.Request())  # a closed channel: raised at await too
    with pytest.raises(lbclient.ConfigurationError, match="closed"):
        await closed
    assert in_flight(lb) == 0


@pytest.mark.parametrize("first", ["nothing", "done", "add_done_callback"])
async def test_a_call_cancelled_before_anything_ran_reports_a_cancellation(
    echo, backends, make_lb, open_channel, first
):
    listener = Outcomes()
    lb = make_lb(backends, listeners=[listener])
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    await stub.Unary(echo.pb2.Request())  # resolves the service
    call = stub.Unary(echo.pb2.Request(sleep=5))
    if first == "done":
        assert not call.done()  # its task is made, not started
    elif first == "add_done_callback":
        ended = asyncio.Event()
        call.add_done_callback(lambda _: ended.set())
    assert call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert call.cancelled()
    assert await call.code() is S.CANCELLED
    if first == "add_done_callback":
        await asyncio.wait_for(ended.wait(), 5)
    assert await settled(lb)
    assert listener.seen[-1][1].cancelled
    assert sum(o.failure is not None for _, o in listener.seen) == 0


async def test_calls_made_together_and_awaited_later_all_answer(
    echo, backends, make_lb, open_channel
):
    lb = make_lb(backends)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    await stub.Unary(echo.pb2.Request())
    calls = [stub.Unary(echo.pb2.Request(text=str(i))) for i in range(6)]
    await asyncio.sleep(0.05)  # they run before anyone awaits them, as grpcio's calls do
    assert [(await call).text for call in calls] == [str(i) for i in range(6)]
    assert await settled(lb)
    assert sum(r["successes"] for r in lb.stats("echo")["instances"]) == 7


async def test_awaited_held_dropped_and_cancelled_calls_together_leak_nothing(
    echo, backends, make_lb, open_channel
):
    lb = make_lb(backends, outlier=None)
    stub = echo.pb2_grpc.EchoStub(open_channel(lb))
    await stub.Unary(echo.pb2.Request())  # resolves the service
    backends[1].stop()  # every third first attempt cannot connect and is retried
    awaited, held, cancelled = [], [], []
    for i in range(24):
        call = stub.Unary(echo.pb2.Request(text=str(i), sleep=0.01))
        kind = i % 4
        if kind == 0:
            awaited.append((i, asyncio.ensure_future(call)))
        elif kind == 1:
            held.append((i, call))
        elif kind == 2:
            assert call.cancel()
            cancelled.append(call)
        del call  # kind 3: dropped
    for i, task in awaited:
        assert (await task).text == str(i)
    await asyncio.sleep(0.1)
    for i, call in held:
        assert (await call).text == str(i)
    for call in cancelled:
        with pytest.raises(asyncio.CancelledError):
            await call
    assert await settled(lb)
    successes = lambda: sum(r["successes"] for r in lb.stats("echo")["instances"])  # noqa: E731
    assert await eventually(lambda: successes() == 1 + 18)
