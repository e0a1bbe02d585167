"""``lbclient resolve`` and ``lbclient watch``: what a registry answers, and what the balancer
makes of it over time.

``resolve`` asks the registry once. ``watch`` runs a real LoadBalancer on the service (so it
sees exactly what an application would: the registry's watch, the health chain, the probes
given with ``--health-check``) and redraws on every change, fed by the listener hooks.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lbclient._exceptions import ConfigurationError, LBError
from lbclient._instance import ServiceInstance
from lbclient._listener import LoadBalancerListener
from lbclient._watch_views import Snapshot, make_view
from lbclient.health import HealthCheck

if TYPE_CHECKING:
    from lbclient._balancer import ServiceState

POLL_SECONDS = 0.25
"""How often ``watch`` looks again without an event (marks of added/removed rows expire)."""


def add_commands(commands: Any) -> None:
    """Register ``resolve`` and ``watch`` on the ``lbclient`` command's subparsers."""
    resolve = commands.add_parser(
        "resolve",
        help="print the instances a registry returns for a service now",
        description="Ask the registry once and print the service's instances.",
    )
    _common(resolve)
    watch = commands.add_parser(
        "watch",
        help="follow a service's instances and their state as the balancer sees them",
        description="Keep a live table of the service's instances (one JSON line per change "
        "with --json, plain lines when the output is not a terminal). Ctrl-C ends it.",
    )
    _common(watch)
    watch.add_argument(
        "--health-check",
        metavar="CHECK",
        type=parse_health_check,
        help="probe the instances too: http:/path, tcp or grpc[:service]",
    )
    watch.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between probes with --health-check (2)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="URI", help="registry URI, e.g. consul://127.0.0.1:8500")
    parser.add_argument("service", metavar="SERVICE", help="the service name")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def parse_health_check(text: str) -> HealthCheck:
    """``http:/path``, ``tcp``, ``grpc`` or ``grpc:service`` → a health check (its interval
    is set from ``--interval`` afterwards)."""
    from lbclient.health import GrpcHealthCheck, HttpHealthCheck, TcpHealthCheck

    kind, _, rest = text.partition(":")
    try:
        if kind == "http":
            return HttpHealthCheck(rest or "/health")
        if kind == "tcp" and not rest:
            return TcpHealthCheck()
        if kind == "grpc":
            return GrpcHealthCheck(rest)
    except LBError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    raise argparse.ArgumentTypeError(
        f"unknown health check {text!r}; expected http:/path, tcp, grpc or grpc:service"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``resolve`` or ``watch``; library errors become one clear line and exit code 1."""
    try:
        if args.command == "resolve":
            return resolve(args.uri, args.service, as_json=args.json)
        return watch(args)
    except LBError as exc:
        print(f"lbclient {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C during a (blocking) first resolution
        return 130


def resolve(uri: str, service: str, *, as_json: bool) -> int:
    from lbclient.registry._uri import registry_from_uri

    registry = registry_from_uri(uri)
    try:
        instances = registry.resolve(service)
    finally:
        registry.close()
    rows = [describe(i) for i in instances]
    if as_json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"{service}: the registry lists no instance")
    for row in rows:
        print(
            f"{row['id']}  {row['address']}  zone={row['zone'] or '-'}  weight={row['weight']:g}"
            f"  tags={','.join(row['tags']) or '-'}  health={row['health'] or '-'}"
        )
    return 0


def describe(instance: ServiceInstance) -> dict[str, Any]:
    """An instance as JSON-ready data (the ``--json`` object of both commands)."""
    return {
        "id": instance.id,
        "address": instance.address,
        "host": instance.host,
        "port": instance.port,
        "zone": instance.zone,
        "weight": instance.weight,
        "tags": sorted(instance.tags),
        "metadata": dict(instance.metadata),
        "scheme": instance.scheme,
        "health": registry_health(instance.metadata),
    }


def registry_health(metadata: Mapping[str, str]) -> str | None:
    """The health the registry itself reports, when it reports one (None: it does not say)."""
    if "consul.health" in metadata:
        return metadata["consul.health"]
    if metadata.get("terminating") == "true":  # Kubernetes: only ready or terminating ones
        return "terminating"
    if "namespace" in metadata:
        return "ready"
    return None


class _Changes(LoadBalancerListener):
    """Wakes the watch loop on every event that can change the table; keeps probe verdicts."""

    def __init__(self, wake: queue.SimpleQueue[None]) -> None:
        self._wake = wake
        self.probes: dict[str, tuple[bool, str]] = {}
        self.registry_error: str | None = None

    def on_instance_states(self, service: str, counts: Mapping[str, int]) -> None:
        self._wake.put(None)

    def on_registry_update(self, service: str, instances: Sequence[ServiceInstance]) -> None:
        self.registry_error = None
        self._wake.put(None)

    def on_registry_error(self, service: str, error: BaseException) -> None:
        self.registry_error = f"{type(error).__name__}: {error}"
        self._wake.put(None)

    def on_probe(self, service: str, instance: ServiceInstance, passed: bool, detail: str) -> None:
        self.probes[instance.id] = (passed, detail)
        self._wake.put(None)


def watch(args: argparse.Namespace) -> int:
    from lbclient._balancer import LoadBalancer

    check = args.health_check
    if check is not None:
        try:
            check = dataclasses.replace(check, interval=args.interval)
        except LBError as exc:
            raise ConfigurationError(f"--interval {args.interval}: {exc}") from None
    wake: queue.SimpleQueue[None] = queue.SimpleQueue()
    changes = _Changes(wake)
    stop = threading.Event()

    def interrupted(signum: int, frame: object) -> None:
        stop.set()
        wake.put(None)

    lb = LoadBalancer(args.uri, health_check=check, listeners=[changes])
    previous = signal.signal(signal.SIGINT, interrupted)
    view = make_view(args.service, args.uri, as_json=args.json)
    try:
        state = lb.service(args.service)
        with view:
            while not stop.is_set():
                view.show(_snapshot(state, changes))
                with contextlib.suppress(queue.Empty):
                    wake.get(timeout=POLL_SECONDS)
    except BrokenPipeError:  # `lbclient watch ... | head`: the reader left
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    finally:
        lb.close()
        signal.signal(signal.SIGINT, previous)
    return 130


def _snapshot(state: ServiceState, changes: _Changes) -> Snapshot:
    states = state.states_by_instance()
    rows = []
    for endpoint in list(state.endpoints.values()):
        row = describe(endpoint.instance)
        row["state"] = states.get(endpoint.id, "filtered")
        probe = changes.probes.get(endpoint.id)
        row["probe"] = None if probe is None else ("passing" if probe[0] else "failing")
        row["probe_detail"] = None if probe is None else probe[1]
        rows.append(row)
    rows.sort(key=lambda r: r["id"])
    return Snapshot(time.time(), rows, changes.registry_error, state.panic.panicking)
