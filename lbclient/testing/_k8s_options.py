"""Status objects and list/watch options of KubernetesTestServer, as the apiserver has them.

``parse_query`` reads the query parameters the way apimachinery's parameter codec does
(booleans, integers, selectors) and raises ``Refused`` with the Status a real apiserver
answers for what it would refuse.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from lbclient.testing._k8s_selector import (
    Selector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)


def status(code: int, reason: str, message: str, details: dict[str, Any] | None) -> dict[str, Any]:
    """A ``Status`` object; ``details`` None leaves the key out, as apimachinery does."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class Refused(Exception):
    """An answer other than 200, as a Status object."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.body = status(code, reason, message, details)


def resource_details(group: str, resource: str, **extra: str) -> dict[str, Any]:
    """``details`` naming a resource: an empty group (core) is omitted, as in Go."""
    return {**extra, **({"group": group} if group else {}), "kind": resource}


@dataclasses.dataclass(frozen=True)
class Query:
    """The list/watch options of one request, parsed and checked as the apiserver does."""

    watch: bool
    bookmarks: bool
    timeout: int | None
    version: int | None  # None: "" (most recent); 0: "0" (any)
    match: str
    labels: Selector
    fields: Selector


def query_bool(value: str | None) -> bool:
    # apimachinery's query conversion: absent, "false" or "0" is false; anything else true.
    return value is not None and value.lower() not in ("false", "0")


def parse_query(query: Mapping[str, str]) -> Query:
    """Raise Refused with the apiserver's answer for options it would refuse."""
    timeout_text = query.get("timeoutSeconds", "")
    if timeout_text and re.fullmatch(r"[+-]?\d+", timeout_text) is None:
        raise Refused(
            400, "BadRequest", f'strconv.ParseInt: parsing "{timeout_text}": invalid syntax'
        )
    version_text = query.get("resourceVersion", "")
    if version_text and not version_text.isdigit():
        raise Refused(
            400,
            "BadRequest",
            f'resourceVersion: Invalid value: "{version_text}": strconv.ParseUint: parsing '
            f'"{version_text}": invalid syntax',
        )
    watch = query_bool(query.get("watch"))
    match = query.get("resourceVersionMatch", "")
    if match or "sendInitialEvents" in query:
        _check_match(match, version_text, watch, "sendInitialEvents" in query)
    if query.get("continue"):
        raise Refused(
            400,
            "BadRequest",
            f'continue: Invalid value: "{query["continue"]}": continue key is not valid '
            "(the test server never returns one: every list is complete)",
        )
    try:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
    except SelectorError as exc:
        raise Refused(400, "BadRequest", str(exc)) from None
    return Query(
        watch=watch,
        bookmarks=query_bool(query.get("allowWatchBookmarks")),
        timeout=int(timeout_text) if timeout_text else None,
        version=int(version_text) if version_text else None,
        match=match,
        labels=labels,
        fields=fields,
    )


def _check_match(match: str, version: str, watch: bool, initial_events: bool) -> None:
    def invalid(field: str, kind: str, detail: str) -> Refused:
        message = f"{kind}: {detail}"
        return Refused(
            422,
            "Invalid",
            f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}',
            {
                "group": "meta.k8s.io",
                "kind": "ListOptions",
                "causes": [{"reason": f"FieldValue{kind.split()[0]}", "message": message,
                            "field": field}],
            },
        )  # fmt: skip

    if initial_events:
        # A cluster with the WatchList feature gate off: clients fall back to list + watch.
        raise invalid(
            "sendInitialEvents",
            "Forbidden",
            "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
        )
    if watch:
        raise invalid(
            "resourceVersionMatch", "Forbidden", "resourceVersionMatch is forbidden for watch"
        )
    if not version:
        raise invalid(
            "resourceVersionMatch",
            "Forbidden",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )
    if match not in ("Exact", "NotOlderThan"):
        raise invalid(
            "resourceVersionMatch",
            "Unsupported value",
            f'"{match}": supported values: "Exact", "NotOlderThan"',
        )
    if match == "Exact" and version == "0":
        raise invalid(
            "resourceVersionMatch",
            "Forbidden",
            'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
        )
