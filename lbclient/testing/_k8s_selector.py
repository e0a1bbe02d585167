"""Label and field selectors as the apiserver parses them (k8s.io/apimachinery labels/fields).

Label selectors take the whole grammar: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k``, ``!k``, ``k>1``, ``k<1``, joined by commas. Keys must be qualified
names and values valid label values; anything else is a ``SelectorError`` whose text is the
apiserver's own (it becomes the 400 Status message). Field selectors are ``f=v``, ``f==v``,
``f!=v`` with ``\\`` escapes; only ``metadata.name`` and ``metadata.namespace`` exist for
endpoint resources, as on a real server.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_NAME_RE = re.compile(f"^{_NAME}$")
_VALUE = f"({_NAME})?"
_VALUE_RE = re.compile(f"^{_VALUE}$")
_DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"
_SUBDOMAIN_RE = re.compile(f"^{_SUBDOMAIN}$")
_SPECIAL = "=!(),<>"
_WHITESPACE = " \t\r\n"
_SYMBOLS = {"=", "==", "!", "!=", "(", ")", ",", ">", "<"}
_KEYWORDS = {"in", "notin"}
BINARY_OPERATORS = "in, notin, =, ==, !=, gt, lt"


class SelectorError(ValueError):
    """A selector the apiserver would refuse; the text is its message (answered 400)."""


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists", "gt", "lt"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if not present or not _is_int(value):
            return False
        (bound,) = self.values
        return int(value) > int(bound) if self.op == "gt" else int(value) < int(bound)


Selector = tuple[Requirement, ...]


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", text) is not None


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _invalid(path: str, value: str, detail: str) -> str:
    return f"{path}: Invalid value: {_quote(value)}: {detail}"


def _key_errors(key: str) -> list[str]:
    """apimachinery's IsQualifiedName: an optional DNS-subdomain prefix, '/', a name."""
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
        errors: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        errors = []
        if not prefix:
            errors.append("prefix part must be non-empty")
        elif len(prefix) > 253:
            errors.append("prefix part must be no more than 253 characters")
        elif not _SUBDOMAIN_RE.match(prefix):
            errors.append(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character (e.g. 'example.com', regex used for validation is "
                f"'{_SUBDOMAIN}')"
            )
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'MyName',  or "
            "'my.name',  or '123-abc', regex used for validation is "
            f"'{_NAME}') with an optional DNS subdomain prefix and '/' (e.g. "
            "'example.com/MyName')"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    elif not _NAME_RE.match(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
            f"or '123-abc', regex used for validation is '{_NAME}')"
        )
    return errors


def _value_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _VALUE_RE.match(value):
        errors.append(
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
            "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
            f"'{_VALUE}')"
        )
    return errors


def _tokens(text: str) -> list[tuple[str, str]]:
    """``(kind, literal)`` pairs: kind is a symbol, ``"id"``, a keyword, or ``"error"``."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch in _WHITESPACE:
            pos += 1
        elif ch in _SPECIAL:
            # the longest run of special characters that is still a known symbol
            end, best = pos, ""
            while end < len(text) and text[end] in _SPECIAL:
                candidate = text[pos : end + 1]
                if candidate in _SYMBOLS:
                    best = candidate
                elif best:
                    break
                end += 1
            if not best:
                tokens.append(("error", f"error expected: keyword found '{text[pos:end]}'"))
                return tokens
            tokens.append((best, best))
            pos += len(best)
        else:
            end = pos
            while end < len(text) and text[end] not in _SPECIAL + _WHITESPACE:
                end += 1
            word = text[pos:end]
            tokens.append((word if word in _KEYWORDS else "id", word))
            pos = end
    tokens.append(("end", ""))
    return tokens


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self, values: bool = True) -> tuple[str, str]:
        kind, literal = self.tokens[min(self.pos, len(self.tokens) - 1)]
        if values and kind in _KEYWORDS:
            kind = "id"  # ``in``/``notin`` are plain words where a value is expected
        return kind, literal

    def take(self, values: bool = True) -> tuple[str, str]:
        token = self.peek(values)
        self.pos += 1
        return token

    def parse(self) -> Selector:
        requirements: list[Requirement] = []
        while True:
            kind, literal = self.peek()
            if kind == "end":
                return tuple(requirements)
            if kind not in ("id", "!"):
                raise SelectorError(
                    f"found '{literal}', expected: !, identifier, or 'end of string'"
                )
            try:
                requirements.append(self.requirement())
            except SelectorError as exc:
                raise SelectorError(f"unable to parse requirement: {exc}") from None
            kind, literal = self.take()
            if kind == "end":
                return tuple(requirements)
            if kind != ",":
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            kind, literal = self.peek()
            if kind not in ("id", "!"):
                raise SelectorError(f"found '{literal}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        kind, key = self.take()
        negated = kind == "!"
        if negated:
            kind, key = self.take()
        if kind != "id":
            raise SelectorError(f"found '{key}', expected: identifier")
        errors = _key_errors(key)
        if errors:
            raise SelectorError(_invalid("<nil>", key, "; ".join(errors)))
        if negated or self.peek()[0] in ("end", ","):
            return Requirement(key, "!exists" if negated else "exists")
        kind, literal = self.take(values=False)
        op = {"=": "=", "==": "=", "!=": "!=", "in": "in", "notin": "notin", ">": "gt", "<": "lt"}
        if kind not in op:
            raise SelectorError(f"found '{literal}', expected: {BINARY_OPERATORS}")
        values = self.set_values() if kind in ("in", "notin") else self.exact_value()
        return _checked(Requirement(key, op[kind], frozenset(values)))

    def exact_value(self) -> set[str]:
        if self.peek()[0] in ("end", ","):
            return {""}
        kind, literal = self.take()
        if kind != "id":
            raise SelectorError(f"found '{literal}', expected: identifier")
        return {literal}

    def set_values(self) -> set[str]:
        kind, literal = self.take()
        if kind != "(":
            raise SelectorError(f"found '{literal}' expected: '('")
        kind, literal = self.peek()
        if kind == ")":
            self.take()
            return {""}
        if kind not in ("id", ","):
            raise SelectorError(f"found '{literal}', expected: ',', ')' or identifier")
        values: set[str] = set()
        while True:
            kind, literal = self.take()
            if kind == "id":
                values.add(literal)
                after, after_literal = self.peek()
                if after == ")":
                    self.take()
                    return values
                if after != ",":
                    raise SelectorError(f"found '{after_literal}', expected: ',' or ')'")
            elif kind == ",":
                if not values:
                    values.add("")  # "(,"
                after = self.peek()[0]
                if after == ")":
                    self.take()
                    values.add("")  # ",)"
                    return values
                if after == ",":
                    self.take()
                    values.add("")  # ",,"
            else:
                raise SelectorError(f"found '{literal}', expected: ',', or identifier")


def _checked(requirement: Requirement) -> Requirement:
    """apimachinery's NewRequirement checks: integer bounds, valid label values."""
    errors = []
    ordered = sorted(requirement.values)
    if requirement.op in ("gt", "lt"):
        for i, value in enumerate(ordered):
            if not _is_int(value):
                detail = "for 'Gt', 'Lt' operators, the value must be an integer"
                errors.append(_invalid(f"values[{i}]", value, detail))
    for i, value in enumerate(ordered):
        problems = _value_errors(value)
        if problems:
            errors.append(_invalid(f"values[{i}][{requirement.key}]", value, "; ".join(problems)))
    if errors:
        raise SelectorError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    return requirement


def parse_label_selector(text: str | None) -> Selector:
    """Parse a ``labelSelector``; raise SelectorError with the apiserver's message."""
    return _LabelParser(text or "").parse()


FIELDS = ("metadata.name", "metadata.namespace")


def parse_field_selector(text: str | None) -> Selector:
    """Parse a ``fieldSelector`` (``=``, ``==``, ``!=``, backslash escapes)."""
    requirements = []
    for term in _split_unescaped(text or "", ","):
        if not term:
            continue
        for i in range(len(term)):
            op = next((o for o in ("!=", "==", "=") if term.startswith(o, i)), None)
            if op is not None:
                field, value = term[:i], term[i + len(op) :]
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        if field not in FIELDS:
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(
            Requirement(field, "!=" if op == "!=" else "=", frozenset({_unescape(value)}))
        )
    return tuple(requirements)


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], "", False
    for ch in text:
        if escaped:
            current += "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == separator:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current + ("\\" if escaped else ""))
    return parts


def _unescape(value: str) -> str:
    out, escaped = "", False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise SelectorError(f"invalid field selector: unescaped character: {ch}")
        else:
            out += ch
    if escaped:
        raise SelectorError("invalid field selector: unterminated escape sequence")
    return out


def selected(obj: Mapping[str, object], labels: Selector, fields: Selector) -> bool:
    """Whether ``obj`` (with ``metadata``) matches both selectors."""
    meta = obj["metadata"]
    assert isinstance(meta, Mapping)
    label_values = meta.get("labels") or {}
    field_values = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"]}
    return all(r.matches(label_values) for r in labels) and all(
        r.matches(field_values) for r in fields
    )
