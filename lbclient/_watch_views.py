"""How ``lbclient watch`` shows changes: a live rich table, plain lines, or JSON lines.

Every view gets the full snapshot at each look and works out itself what changed, so the
watch loop stays a loop and a view never misses a state it was not told about.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time
from types import TracebackType
from typing import Any

PANIC = "panic: too few instances look healthy, balancing across all of them"

MARK_SECONDS = 3.0
"""How long the live table marks an added (+) or removed (-) instance."""

_IGNORED = frozenset({"probe_detail"})
"""Row fields that alone do not make a change (a probe's wording, e.g. its latency)."""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the balancer knows of the service at ``time``: one row per instance, by id."""

    time: float
    rows: list[dict[str, Any]]
    registry_error: str | None
    panic: bool = False
    """Too few instances look healthy: the balancer ignores the verdicts (panic threshold)."""


@dataclasses.dataclass
class Change:
    added: list[str]
    removed: list[dict[str, Any]]
    changed: list[str]


def _key(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _IGNORED}


class View:
    """Base of the views: tells ``changed`` what differs from the last snapshot."""

    def __init__(self, service: str, uri: str) -> None:
        self.service = service
        self.uri = uri
        self._last: dict[str, dict[str, Any]] | None = None
        self._error: str | None = None
        self._panic = False

    def show(self, snapshot: Snapshot) -> None:
        current = {row["id"]: row for row in snapshot.rows}
        last = self._last
        if last is None:
            change: Change | None = Change(list(current), [], [])
        else:
            change = Change(
                [i for i in current if i not in last],
                [row for i, row in last.items() if i not in current],
                [i for i in current if i in last and _key(current[i]) != _key(last[i])],
            )
            if not (
                change.added
                or change.removed
                or change.changed
                or snapshot.registry_error != self._error
                or snapshot.panic != self._panic
            ):
                change = None
        self._last, self._error = current, snapshot.registry_error
        self._panic = snapshot.panic
        self.draw(snapshot, change)

    def draw(self, snapshot: Snapshot, change: Change | None) -> None:
        """Show ``snapshot``; ``change`` is None when nothing changed since the last one."""

    def __enter__(self) -> View:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def _clock(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S")


class JsonView(View):
    """One JSON object per change: ``{"time", "service", "instances", "added", "removed",
    "changed", "registry_error"}``; ``time`` is ISO 8601 in UTC."""

    def draw(self, snapshot: Snapshot, change: Change | None) -> None:
        if change is None:
            return
        line = {
            "time": datetime.datetime.fromtimestamp(snapshot.time, datetime.UTC).isoformat(),
            "service": self.service,
            "instances": snapshot.rows,
            "added": change.added,
            "removed": [row["id"] for row in change.removed],
            "changed": change.changed,
            "registry_error": snapshot.registry_error,
            "panic": snapshot.panic,
        }
        print(json.dumps(line), flush=True)


def _describe(row: dict[str, Any]) -> str:
    probe = row["probe"] or "-"
    if row["probe"] == "failing" and row["probe_detail"]:
        probe += f" ({row['probe_detail']})"
    return (
        f"{row['id']}  {row['address']}  zone={row['zone'] or '-'}  weight={row['weight']:g}  "
        f"registry={row['health'] or '-'}  state={row['state']}  probe={probe}"
    )


class PlainView(View):
    """Plain lines for logs and pipes: ``+`` added, ``-`` removed, ``~`` changed."""

    def draw(self, snapshot: Snapshot, change: Change | None) -> None:
        if change is None:
            return
        at = _clock(snapshot.time)
        rows = {row["id"]: row for row in snapshot.rows}
        lines = [f"{at} {self.service}: {len(rows)} instance(s)"]
        lines += [f"{at} + {_describe(rows[i])}" for i in change.added]
        lines += [f"{at} - {_describe(row)}" for row in change.removed]
        lines += [f"{at} ~ {_describe(rows[i])}" for i in change.changed]
        if snapshot.panic:
            lines.append(f"{at} ! {PANIC}")
        if snapshot.registry_error:
            lines.append(
                f"{at} ! registry unreachable, list may be stale: {snapshot.registry_error}"
            )
        print("\n".join(lines), flush=True)


class LiveView(View):
    """A rich table redrawn in place; added rows are marked + and removed ones - for a while."""

    def __init__(self, service: str, uri: str) -> None:
        super().__init__(service, uri)
        from rich.console import Console
        from rich.live import Live

        self._marks: dict[str, tuple[str, float, dict[str, Any]]] = {}
        self._first = True
        self._live = Live(console=Console(), auto_refresh=False, transient=False)

    def __enter__(self) -> View:
        self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._live.stop()

    def draw(self, snapshot: Snapshot, change: Change | None) -> None:
        now = time.monotonic()
        if change is not None and not self._first:
            for i in change.added:
                self._marks[i] = ("+", now + MARK_SECONDS, {})
            for row in change.removed:
                self._marks[row["id"]] = ("-", now + MARK_SECONDS, row)
            for i in change.changed:
                self._marks.setdefault(i, ("~", now + MARK_SECONDS, {}))
        self._first = False
        expired = [i for i, (_, until, _) in self._marks.items() if until <= now]
        for i in expired:
            del self._marks[i]
        if change is not None or expired:
            self._live.update(self._table(snapshot), refresh=True)

    def _table(self, snapshot: Snapshot) -> Any:
        from rich.table import Table

        table = Table(
            title=f"{self.service} @ {self.uri}  ({len(snapshot.rows)} instance(s), "
            f"{_clock(snapshot.time)})" + (f"\n[bold red]{PANIC}[/]" if snapshot.panic else ""),
            caption="registry unreachable, list may be stale: " + snapshot.registry_error
            if snapshot.registry_error
            else "Ctrl-C to stop",
        )
        for column in ("", "id", "address", "zone", "weight", "tags", "registry", "state", "probe"):
            table.add_column(column)
        rows = [(row, self._marks.get(row["id"], ("", 0.0, {}))[0]) for row in snapshot.rows]
        rows += [(row, "-") for mark, _, row in self._marks.values() if mark == "-"]
        for row, mark in sorted(rows, key=lambda item: item[0]["id"]):
            style = {"+": "green", "-": "red strike", "~": "yellow"}.get(mark, "")
            state = row["state"]
            probe = row["probe"] or "-"
            if row["probe"] == "failing" and row["probe_detail"]:
                probe += f" ({row['probe_detail']})"
            table.add_row(
                mark,
                row["id"],
                row["address"],
                row["zone"] or "-",
                f"{row['weight']:g}",
                ",".join(row["tags"]) or "-",
                row["health"] or "-",
                state if state == "usable" else f"[bold red]{state}[/]",
                probe,
                style=style,
            )
        return table


def make_view(service: str, uri: str, *, as_json: bool) -> View:
    """JSON lines with ``--json``; a live table on a terminal when rich is installed; else
    plain lines."""
    if as_json:
        return JsonView(service, uri)
    if sys.stdout.isatty():
        try:
            return LiveView(service, uri)
        except ImportError:
            pass
    return PlainView(service, uri)
