"""A griffe extension for the API reference: doctest examples in docstrings become code blocks.

Docstrings here are plain text with ``>>>`` examples (run as doctests); rendered as Markdown,
``>>>`` would be a nested quote and ``['a', 'b']`` a link. Each run of ``>>>``/``...`` lines
and the output that follows (up to a blank line) is wrapped in a ``pycon`` fence.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    out: list[str] = []
    in_example = False
    for line in text.splitlines():
        stripped = line.lstrip()
        if not in_example and stripped.startswith(">>>"):
            in_example = True
            out.append("```pycon")
        elif in_example and not stripped:
            in_example = False
            out.append("```")
        out.append(line)
    if in_example:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
