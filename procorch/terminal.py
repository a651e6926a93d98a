"""Styled text and the terminal it is written to: what the CLI's tables need of Rich,
without importing Rich (about 30 ms, a third of a `procorch status`).

`Styled` is one line of text in runs of one style each ("bold green", "dim", ""), with
the measuring, cutting and wrapping the tables do. `Terminal` decides, by Rich's own
rules, whether standard output takes styles and how wide it is, and writes lines as
Rich's `Console.print` would, byte for byte (tests/test_render.py holds the two side by
side):
- a terminal is what `isatty()` says, unless TTY_COMPATIBLE (0 or 1) or FORCE_COLOR
  (set and not empty) says otherwise;
- styles are written only to a terminal whose TERM is not dumb or unknown, and NO_COLOR
  keeps bold and dim but drops the colours;
- the width is COLUMNS, else the terminal's (of stdin, stdout or stderr), else 80;
  a line wider is cut at the width, as Rich crops.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from typing import TextIO

ATTRIBUTES = {"bold": "1", "dim": "2"}
COLOURS = {"red": "31", "green": "32", "yellow": "33", "magenta": "35"}
PIPED_WIDTH = 250  # no terminal width to respect: wide enough for any table


def char_width(char: str) -> int:
    """Cells a character takes: two for wide East Asian ones, none for combining marks."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Cf", "Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cell_len(text: str) -> int:
    """Cells `text` takes on a terminal."""
    return len(text) if text.isascii() else sum(map(char_width, text))


def _cut(text: str, cells: int) -> str:
    """The longest start of `text` that fits in `cells`."""
    if text.isascii():
        return text[:cells]
    used = 0
    for i, char in enumerate(text):
        used += char_width(char)
        if used > cells:
            return text[:i]
    return text


class Styled:
    """One line of text, in runs of one style each."""

    __slots__ = ("runs",)

    def __init__(self, text: str = "", style: str = "") -> None:
        self.runs: list[tuple[str, str]] = [(text, style)] if text else []

    def append(self, text: str, style: str = "") -> Styled:
        if text:
            self.runs.append((text, style))
        return self

    def extend(self, other: Styled) -> Styled:
        self.runs.extend(other.runs)
        return self

    @property
    def plain(self) -> str:
        return "".join(text for text, _ in self.runs)

    @property
    def width(self) -> int:
        return cell_len(self.plain)

    def slice(self, start: int, end: int) -> Styled:
        """Characters `start` to `end` (not cells), with their styles."""
        part, at = Styled(), 0
        for text, style in self.runs:
            part.append(text[max(start - at, 0) : max(end - at, 0)], style)
            at += len(text)
        return part

    def rstrip(self) -> Styled:
        plain = self.plain
        return self.slice(0, len(plain.rstrip()))

    def truncated(self, width: int) -> Styled:
        """Cut to `width` cells, its last cell an ellipsis, if it is wider."""
        plain = self.plain
        if cell_len(plain) <= width:
            return self
        keep = len(_cut(plain, width - 1))
        return self.slice(0, keep).append("…", _style_at(self, keep))

    def wrapped(self, width: int) -> list[Styled]:
        """On lines of at most `width` cells: broken at spaces, a longer word folded."""
        plain = self.plain
        starts, used = [0], 0
        for start, end in _words(plain):
            word = plain[start:end].rstrip(" ")
            if used and used + cell_len(word) > width:
                starts.append(start)
                used = 0
            while cell_len(plain[starts[-1] : start + len(word)]) > width:
                starts.append(starts[-1] + max(1, len(_cut(plain[starts[-1] :], width))))
            used = cell_len(plain[starts[-1] : end])
        ends = [*starts[1:], len(plain)]
        return [self.slice(a, b).rstrip() for a, b in zip(starts, ends, strict=True)]


def _words(text: str) -> Iterable[tuple[int, int]]:
    """Each word with the spaces after it, as (start, end)."""
    start = 0
    while start < len(text):
        end = start
        while end < len(text) and text[end] != " ":
            end += 1
        while end < len(text) and text[end] == " ":
            end += 1
        yield start, end
        start = end


def _style_at(line: Styled, index: int) -> str:
    at = 0
    for text, style in line.runs:
        if at <= index < at + len(text):
            return style
        at += len(text)
    return ""


def split_lines(text: str, style: str = "") -> list[Styled]:
    return [Styled(line, style) for line in text.split("\n")]


class Terminal:
    """Where the tables go: whether it takes styles, and how wide it is."""

    def __init__(self, width: int, styles: bool, colours: bool = True) -> None:
        self.width = width
        self.styles = styles
        self.colours = colours

    @classmethod
    def detect(
        cls, stream: TextIO | None = None, environ: Mapping[str, str] | None = None
    ) -> Terminal:
        """Standard output as Rich sees it; piped, it is PIPED_WIDTH wide and unstyled."""
        stream = sys.stdout if stream is None else stream
        environ = os.environ if environ is None else environ
        if not _is_terminal(stream, environ):
            return cls(PIPED_WIDTH, styles=False)
        dumb = environ.get("TERM", "").lower() in ("dumb", "unknown")
        return cls(
            80 if dumb else _width(environ),
            styles=not dumb,
            colours=environ.get("NO_COLOR", "") == "",
        )

    def ansi(self, line: Styled) -> str:
        """The line as written: cut to the width, each styled run in its escape codes."""
        out, room = [], self.width
        for text, style in _merged(line.runs):
            if room <= 0:
                break
            if cell_len(text) > room:
                text = _cut(text, room)
            room -= cell_len(text)
            codes = self._codes(style) if self.styles else ""
            out.append(f"\x1b[{codes}m{text}\x1b[0m" if codes and text else text)
        return "".join(out)

    def _codes(self, style: str) -> str:
        words = style.split()
        codes = [ATTRIBUTES[w] for w in words if w in ATTRIBUTES]
        if self.colours:
            codes += [COLOURS[w] for w in words if w in COLOURS]
        return ";".join(codes)

    def write(self, lines: Iterable[Styled], stream: TextIO | None = None) -> None:
        stream = sys.stdout if stream is None else stream
        stream.write("".join(self.ansi(line) + "\n" for line in lines))


def _merged(runs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Neighbouring runs of one style as one (Rich writes them in one escape)."""
    merged: list[tuple[str, str]] = []
    for text, style in runs:
        if merged and merged[-1][1] == style:
            merged[-1] = (merged[-1][0] + text, style)
        else:
            merged.append((text, style))
    return merged


def _is_terminal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    compatible = environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    force = environ.get("FORCE_COLOR")
    if force is not None:
        return force != ""
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


def _width(environ: Mapping[str, str]) -> int:
    columns = environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns) or 80
    for fd in (0, 1, 2):
        try:
            return os.get_terminal_size(fd).columns or 80
        except (ValueError, OSError):
            continue
    return 80
