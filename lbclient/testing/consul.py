"""ConsulTestServer: a protocol-faithful Consul agent on loopback, for tests without a cluster.

It implements, from Consul's own API docs (see reference/consul.md):

- ``GET /v1/health/service/<name>`` with ``passing`` (over ALL checks, the node's serfHealth
  included), repeatable ``tag`` (all must match, case-insensitive), ``dc``, ``node-meta``,
  ``filter`` (a go-bexpr subset, see ``_consul_bexpr``), ``peer``, consistency flags,
  blocking ``index`` + ``wait`` (default 5 min, clamped to 10 min, plus a random stagger up
  to wait/16), and the ``X-Consul-Index`` (never 0), ``X-Consul-KnownLeader``,
  ``X-Consul-LastContact`` and ``X-Consul-Effective-Consistency`` headers;
- ``GET /v1/catalog/services`` and ``GET /v1/catalog/service/<name>`` (blocking, ``filter``
  over the catalog rows, ``tag``, ``node-meta``, ``peer``);
- ``PUT /v1/agent/service/register`` (keys in any case or snake_case, nested ones too:
  ``TaggedAddresses``, ``Proxy``, ``Connect``, ``Locality``; ``Check``/``Checks`` with
  Consul's default ids and names; checks start critical), ``/v1/agent/service/deregister/<id>``,
  ``/v1/agent/check/pass|warn|fail/<id>?note=`` and ``/v1/agent/check/update/<id>``;
- TTL expiry to critical with Consul's Output, and the DeregisterCriticalServiceAfter reaper;
  an output-only check change reaches the catalog after ``check_update_interval`` (Consul:
  5 min, times 0.5 to 1.5), a status change at once;
- ACL tokens from ``X-Consul-Token``, ``Authorization: Bearer`` or ``?token=``; unknown IDs
  answer 404 before any permission check, denials use Consul's current wording (AccessorID,
  the anonymous-token hint), ``X-Consul-Results-Filtered-By-ACLs`` is masked for anonymous;
- every method reaches the router: ``OPTIONS`` answers 200 with ``Allow``, a wrong method 405
  ``method X not allowed`` with ``Allow``; request bodies are always read (keep-alive safe);
- HTTPS when given an ``ssl_context`` (server side, with its certificate loaded).

Fidelity (S: as Consul; R: refused as Consul refuses; O: out of scope):

=============================================  ===  ============================================
health/catalog reads, parameters above         S
``near``                                       S    one node: the order is already the answer
``cached``                                     S    served fresh (``X-Cache: MISS``), stale
``ns``, ``partition`` (query or header)        R    400 "... are a Consul Enterprise feature"
``max_stale``                                  S    a bad duration: 400, as Consul
``peer``                                       S    no peerings: every peer is unknown, ``[]``
agent service and check endpoints above        S    HTTP/TCP/gRPC/script checks stored, not run
other endpoints (KV, sessions, ...)            O    404 with an empty body (Consul's index)
sidecar registration (Connect.SidecarService)  O    stored as given, no sidecar service created
=============================================  ===  ============================================

Simplifications, all documented: one node; ACLs are one policy per token, ``"read"``,
``"write"`` or ``"none"`` over every service (``acl_tokens={"secret": "write"}``), anonymous
requests get ``anonymous_policy`` (default ``"none"``: reads filtered to nothing, writes
refused).

>>> with ConsulTestServer() as agent:                                   # doctest: +SKIP
...     registry = lbclient.ConsulRegistry(port=agent.port)
...     with lbclient.ConsulRegistrar("orders", 8001, consul_port=agent.port):
...         registry.resolve("orders")[0].port
8001

It needs no client library (standard library and lbclient only).

Test knobs (thread-safe, changeable while it runs): ``fail_next(n, status)``,
``slow(delay)`` (also ``delay=``), ``malformed_next(n, body)``, ``down()``/``up()`` (stop and
come back on the same port, state kept), ``reset()`` (lose all state, index back to 1),
``set_node_status(status)``, and the constructor's ``reap_interval``, ``min_deregister``
(Consul: 30 s and 1 min) and ``check_update_interval`` (Consul: 5 min) to make the reaper
and deferred output syncs testable.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from lbclient.testing._consul_http import ConsulHandler
from lbclient.testing._consul_state import ConsulHTTPError, ConsulState
from lbclient.testing._server import LoopbackServer, QuietHTTPServer

MALFORMED_BODY = b'[{"Node": {"Node": "test-node", "Address": '
"""What ``malformed_next`` serves by default: JSON cut off mid-way."""


ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
"""The AccessorID of Consul's anonymous token."""


class _Server(QuietHTTPServer):
    consul: ConsulTestServer


class ConsulTestServer(LoopbackServer[_Server]):
    """A Consul agent stand-in on ``127.0.0.1`` (random port unless given), run in threads."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        datacenter: str = "dc1",
        node_meta: Mapping[str, str] | None = None,
        acl_tokens: Mapping[str, str] | None = None,
        anonymous_policy: str = "none",
        reap_interval: float = 30.0,
        min_deregister: float = 60.0,
        check_update_interval: float = 300.0,
        delay: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host, port)
        self.ssl_context = ssl_context
        self.state = ConsulState(
            address=host,
            datacenter=datacenter,
            node_meta=node_meta,
            reap_interval=reap_interval,
            min_deregister=min_deregister,
            check_update_interval=check_update_interval,
        )
        self.acl_tokens = dict(acl_tokens) if acl_tokens is not None else None
        self.anonymous_policy = anonymous_policy
        self.delay = delay
        self.malformed_body = MALFORMED_BODY
        self.requests: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._fail: list[int] = []
        self._malformed = 0
        self._connections: set[socket.socket] = set()

    def __repr__(self) -> str:
        return f"<ConsulTestServer {self.url} {'up' if self.running else 'down'}>"

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> ConsulTestServer:
        """Start the clock (TTL expiry, reaper) and the HTTP listener."""
        self.state.start_clock()
        return self.up()

    def stop(self) -> None:
        """Stop everything; the server cannot be restarted after this."""
        self.down()
        self.state.close()

    def up(self) -> ConsulTestServer:
        """Listen again (on the same port after ``down``)."""
        return super().start()

    def down(self) -> None:
        """Refuse connections and reset the open ones, pending blocking queries included."""
        super().stop()

    def _make_server(self) -> _Server:
        server = _Server((self.host, self.port), ConsulHandler)
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        server.consul = self
        return server

    def _thread_name(self) -> str:
        return f"consul-test-{self.port}"

    def _after_close(self, server: _Server) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with self.state.cond:
            self.state.cond.notify_all()

    # -- knobs ------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` (before any other processing)."""
        with self._lock:
            self._fail.extend([status] * n)

    def slow(self, delay: float) -> None:
        """Hold every answer ``delay`` seconds (0 turns it off)."""
        self.delay = delay

    def malformed_next(self, n: int = 1, body: bytes | None = None) -> None:
        """Serve the next ``n`` JSON answers (status and headers intact) with a broken body."""
        with self._lock:
            self._malformed += n
            if body is not None:
                self.malformed_body = body

    def reset(self) -> None:
        """Lose all state and restart the index at 1 (pair with ``down``/``up`` to mimic a
        dev agent restart); registrars re-register on their next heartbeat's 404."""
        self.state.reset()

    def set_node_status(self, status: str) -> None:
        """Set the node's serfHealth check (it fails every ``?passing`` query when not passing)."""
        self.state.set_node_status(status)

    def check(self, check_id: str) -> dict[str, Any]:
        """A copy of one check as the agent holds it (for assertions)."""
        with self.state.cond:
            return dict(self.state.checks[check_id].data)

    def service_ids(self, name: str | None = None) -> list[str]:
        with self.state.cond:
            return sorted(
                sid for sid, s in self.state.services.items() if name in (None, s.data["Service"])
            )

    # -- used by the handler ----------------------------------------------------------------

    def take_failure(self) -> int | None:
        with self._lock:
            return self._fail.pop(0) if self._fail else None

    def take_malformed(self) -> bool | None:
        with self._lock:
            if self._malformed <= 0:
                return None
            self._malformed -= 1
            return True

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests[(method, path)] += 1

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    @staticmethod
    def accessor_id(token: str | None) -> str:
        """The AccessorID this server gives a secret (the anonymous one for None)."""
        if token is None:
            return ANONYMOUS_ACCESSOR
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"consul-test-token:{token}"))

    def resolve(self, token: str | None) -> str:
        """The policy of ``token``; 403 ``ACL not found`` for a secret no one issued."""
        if self.acl_tokens is None:
            return "write"
        if token is None:
            return self.anonymous_policy
        policy = self.acl_tokens.get(token)
        if policy is None:
            raise ConsulHTTPError(403, "ACL not found")
        return policy

    def can_read(self, token: str | None, service: str | None) -> bool:
        try:
            return self.resolve(token) in ("read", "write")
        except ConsulHTTPError:
            return False

    def authorize_read(self, token: str | None, service: str | None) -> bool:
        """403 for an unknown token; False (filter the answer) for a token that may not read."""
        return self.resolve(token) in ("read", "write")

    def authorize(self, token: str | None, level: str, service: str) -> None:
        """403 in Consul's words unless ``token`` may ``level`` (read/write) ``service``."""
        policy = self.resolve(token)
        if policy == "write" or (level == "read" and policy == "read"):
            return
        if token is None:
            raise ConsulHTTPError(
                403,
                f"Permission denied: anonymous token lacks permission 'service:{level}' on "
                f'"{service}". The anonymous token is used implicitly when a request does not '
                "specify a token.",
            )
        raise ConsulHTTPError(
            403,
            f"Permission denied: token with AccessorID '{self.accessor_id(token)}' lacks "
            f"permission 'service:{level}' on \"{service}\"",
        )
