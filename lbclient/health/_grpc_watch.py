"""The gRPC ``Watch`` prober: the server streams its status, we learn of changes at once.

Every instance gets one Watch stream, all of them multiplexed on one private asyncio loop in
one thread (grpc.aio), never a thread per instance. Each stream holds a connection for as
long as the instance lives, so Watch suits services with tens of instances, not thousands
(use the default Check polling there). Following gRPC A17: the first message is the current
status and each later one a change; a server without the health service (UNIMPLEMENTED)
counts as healthy and is not asked again; any other failure reports the instance unhealthy
and retries with exponential backoff, reset by every message.

``probe()`` does no I/O once a stream runs: it returns the last status streamed (waiting up
to the check's timeout for the first one). When a status changes, the subscriber (the
HealthCheckFilter) is told at once and probes immediately instead of at its next tick.

Watch streams always use channels of their own, even when a sync ``lbclient.grpc`` channel
lends its sub-channels to Check probes (``ServiceState.channels``): a sync channel's stream
can only be read by a thread blocked on it, one per instance, which this loop exists to avoid,
and a grpc.aio channel belongs to its own event loop. So no Watch stream ever holds a
load-balanced channel's sub-channel open, or is cut when that channel closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lbclient._instance import ServiceInstance
from lbclient.health._checks import ProbeResult

if TYPE_CHECKING:
    from lbclient.health._grpc import GrpcHealthCheck

Subscriber = Callable[[], "Callable[[str], object] | None"]
"""A weak reference to the callback (``weakref.WeakMethod``): called with an instance id."""

MIN_BACKOFF = 0.05
THREAD_NAME = "lbclient-grpc-watch"


class _Stream:
    __slots__ = ("first", "future", "result")

    def __init__(self) -> None:
        self.result: ProbeResult | None = None
        self.first = threading.Event()
        self.future: concurrent.futures.Future[None] | None = None


class GrpcWatchProber:
    """Keeps one Watch stream per probed instance on a private event loop thread."""

    def __init__(self, check: GrpcHealthCheck, modules: tuple[Any, Any, Any]) -> None:
        self._check = check
        self._grpc, self._pb2, self._pb2_grpc = modules
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._subscriber: Subscriber | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=THREAD_NAME, daemon=True
        )
        self._thread.start()
        self._closed = False

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber

    def probe(self, instance: ServiceInstance) -> ProbeResult:
        with self._lock:
            stream = self._streams.get(instance.id)
            if stream is None:
                if self._closed:
                    return ProbeResult(False, "closed")
                stream = self._streams[instance.id] = _Stream()
                stream.future = asyncio.run_coroutine_threadsafe(
                    self._watch(instance, stream), self._loop
                )
        if not stream.first.wait(self._check.timeout):
            return ProbeResult(False, "no Watch answer within the timeout")
        assert stream.result is not None
        return stream.result

    def _report(self, instance_id: str, stream: _Stream, result: ProbeResult) -> None:
        changed = stream.result != result
        stream.result = result
        stream.first.set()
        if changed and self._subscriber is not None:
            callback = self._subscriber()
            if callback is not None:
                callback(instance_id)

    async def _watch(self, instance: ServiceInstance, stream: _Stream) -> None:
        grpc, pb2, pb2_grpc = self._grpc, self._pb2, self._pb2_grpc
        target = instance.authority(self._check.port)
        request = pb2.HealthCheckRequest(service=self._check.service)
        backoff = MIN_BACKOFF
        while True:
            if instance.secure:
                channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
            else:
                channel = grpc.aio.insecure_channel(target)
            try:
                async for response in pb2_grpc.HealthStub(channel).Watch(request):
                    backoff = MIN_BACKOFF
                    name = pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                    healthy = response.status == pb2.HealthCheckResponse.SERVING
                    self._report(instance.id, stream, ProbeResult(healthy, name))
                self._report(instance.id, stream, ProbeResult(False, "Watch stream ended"))
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    result = ProbeResult(True, "health service not implemented (counts as healthy)")
                    self._report(instance.id, stream, result)
                    return
                self._report(instance.id, stream, ProbeResult(False, f"gRPC {code.name}"))
            finally:
                await channel.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._check.interval)

    def forget(self, instance: ServiceInstance) -> None:
        with self._lock:
            stream = self._streams.pop(instance.id, None)
        if stream is not None and stream.future is not None:
            stream.future.cancel()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            if stream.future is not None:
                stream.future.cancel()
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(_drain(), self._loop).result(5.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)
            self._loop.close()


async def _drain() -> None:
    """Let cancelled streams close their channels before the loop stops."""
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
