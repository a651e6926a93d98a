"""Minimal edits of a procorch.toml the user wrote: `scale --save` sets `replicas`.

A targeted edit of the text, not a parse and re-dump: every comment, blank line and
the order of keys stay as the user left them. Only a `[services.NAME]` table header
written on its own line is recognised; anything else (an inline table, a dotted key)
is reported, and the caller checks the result by loading it again.
"""

from __future__ import annotations

import re

# a table header: [services.NAME], NAME bare or quoted, with an optional comment
_HEADER = re.compile(r"^\s*\[\s*services\s*\.\s*(?P<name>\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)\s*\]")
_ANY_HEADER = re.compile(r"^\s*\[")
_REPLICAS = re.compile(r"^(?P<lead>\s*replicas\s*=\s*)(?P<value>[^#\s]+)(?P<rest>.*)$")


class EditError(Exception):
    """The file cannot be edited safely; str() is one line."""


def set_replicas(text: str, service: str, count: int) -> str:
    """`text` with `replicas = count` in `[services.SERVICE]` (the name ignores case):
    the existing line's value replaced (its comment kept), or a line added under the
    header. EditError if the table is not there as a header of its own."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _table_name(line) == service.lower()), None)
    if start is None:
        raise EditError(f"no [services.{service}] table header to write `replicas` under")
    end = next((i for i in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines))
    for i in range(start + 1, end):
        match = _REPLICAS.match(lines[i].rstrip("\r\n"))
        if match:
            newline = lines[i][len(lines[i].rstrip("\r\n")) :]
            lines[i] = f"{match['lead']}{count}{match['rest']}{newline or chr(10)}"
            return "".join(lines)
    header = lines[start]
    newline = "\r\n" if header.endswith("\r\n") else "\n"
    if not header.endswith("\n"):
        lines[start] = header + newline
    lines.insert(start + 1, f"replicas = {count}{newline}")
    return "".join(lines)


def _table_name(line: str) -> str | None:
    match = _HEADER.match(line)
    if match is None or line.lstrip().startswith("[["):
        return None
    return match["name"].strip("\"'").lower()
