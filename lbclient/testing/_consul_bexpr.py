"""A small subset of go-bexpr, the language of Consul's ``?filter=`` parameter.

Supported (enough for the filters clients send in practice):

- ``Selector == "value"``, ``Selector != "value"``
- ``"value" in Selector``, ``"value" not in Selector``,
  ``Selector contains "value"``, ``Selector not contains "value"``
- ``Selector is empty``, ``Selector is not empty``
- ``Selector matches "regex"``, ``Selector not matches "regex"``
- ``and``, ``or``, ``not`` and parentheses, with bexpr's precedence (not > and > or).

A selector is a dotted path into the JSON entry (``Service.Tags``, ``Service.Meta.zone``,
``Node.Meta.rack``); a missing map key reads as empty. Values are double-quoted strings,
backquoted raw strings, or bare words and numbers. Anything else is a 400, like Consul's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[Any], bool]

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<op>==|!=|\(|\))"""
    r"""|(?P<word>[A-Za-z0-9_.\-/:]+))"""
)


class FilterError(ValueError):
    """The expression is outside the supported subset or malformed."""


def compile_filter(text: str) -> Predicate:
    """Compile ``text`` into a predicate over one JSON entry; raises FilterError."""
    tokens = _tokenize(text)
    parser = _Parser(tokens)
    predicate = parser.parse_or()
    if parser.pos != len(tokens):
        raise FilterError(f"unexpected {tokens[parser.pos][1]!r} at token {parser.pos + 1}")
    return predicate


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError(f"unexpected character {text[pos:].strip()[:1]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "str":
            value = bytes(value[1:-1], "utf-8").decode("unicode_escape")
            kind = "value"
        elif kind == "raw":
            value, kind = value[1:-1], "value"
        tokens.append((kind, value))
        pos = match.end()
    if not tokens:
        raise FilterError("empty expression")
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def _peek(self, offset: int = 0) -> str | None:
        i = self.pos + offset
        return self.tokens[i][1] if i < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise FilterError("unexpected end of expression")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _keyword(self, *words: str) -> bool:
        for i, word in enumerate(words):
            token = self._peek(i)
            if token is None or token.lower() != word or self.tokens[self.pos + i][0] != "word":
                return False
        self.pos += len(words)
        return True

    def parse_or(self) -> Predicate:
        left = self.parse_and()
        while self._keyword("or"):
            left = _either(left, self.parse_and())
        return left

    def parse_and(self) -> Predicate:
        left = self.parse_not()
        while self._keyword("and"):
            left = _both(left, self.parse_not())
        return left

    def parse_not(self) -> Predicate:
        if self._keyword("not"):
            inner = self.parse_not()
            return lambda e: not inner(e)
        if self._peek() == "(" and self.tokens[self.pos][0] == "op":
            self.pos += 1
            inner = self.parse_or()
            if self._take() != ("op", ")"):
                raise FilterError("missing ')'")
            return inner
        return self.parse_match()

    def parse_match(self) -> Predicate:
        first = self._take()
        # value [not] in Selector
        if self._keyword("in"):
            selector = self._selector()
            return lambda e: _contains(_select(e, selector), first[1])
        if self._keyword("not", "in"):
            selector = self._selector()
            return lambda e: not _contains(_select(e, selector), first[1])
        if first[0] != "word":
            raise FilterError(f"expected a selector, got {first[1]!r}")
        selector = first[1].split(".")
        if self._keyword("is", "empty"):
            return lambda e: _empty(_select(e, selector))
        if self._keyword("is", "not", "empty"):
            return lambda e: not _empty(_select(e, selector))
        if self._keyword("contains"):
            value = self._take()[1]
            return lambda e: _contains(_select(e, selector), value)
        if self._keyword("not", "contains"):
            value = self._take()[1]
            return lambda e: not _contains(_select(e, selector), value)
        if self._keyword("matches"):
            pattern = self._regex()
            return lambda e: bool(pattern.search(_text(_select(e, selector))))
        if self._keyword("not", "matches"):
            pattern = self._regex()
            return lambda e: not pattern.search(_text(_select(e, selector)))
        op = self._take()
        if op not in (("op", "=="), ("op", "!=")):
            raise FilterError(f"expected an operator after {first[1]!r}, got {op[1]!r}")
        value = self._take()[1]
        if op[1] == "==":
            return lambda e: _text(_select(e, selector)) == value
        return lambda e: _text(_select(e, selector)) != value

    def _selector(self) -> list[str]:
        kind, value = self._take()
        if kind != "word":
            raise FilterError(f"expected a selector, got {value!r}")
        return value.split(".")

    def _regex(self) -> re.Pattern[str]:
        try:
            return re.compile(self._take()[1])
        except re.error as exc:
            raise FilterError(f"invalid regular expression: {exc}") from None


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda e: a(e) or b(e)


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda e: a(e) and b(e)


def _select(entry: Any, path: list[str]) -> Any:
    value = entry
    for part in path:
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def _contains(container: Any, value: str) -> bool:
    if isinstance(container, (list, dict)):
        return value in container
    if isinstance(container, str):
        return value in container
    return False


def _empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, (list, dict)) and not value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
