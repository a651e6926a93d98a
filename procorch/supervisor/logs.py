"""Process output: a size-rotated log file per replica, and the coloured echo of `--foreground`.

The daemon reads each child's stdout+stderr pipe and hands the bytes here, as
supervisord and circus do, so rotation never needs the child's cooperation.

Each line in a log file starts with the time it reached the daemon, UTC to the
millisecond (`2026-12-02T08:41:32.123Z `), so `procorch logs -t/--since` can tell
when it was written; readers strip it unless asked (`read_lines`, `tail_lines`).
A file rolls over only between whole lines, and never grows past its size.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_COLOURS = (36, 33, 32, 35, 34, 91, 96, 93, 92, 95, 94)
STAMP_LEN = len("2026-12-02T08:41:32.123Z ")  # the stamp and the space after it
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
_READ_BLOCK = 65536


class _Clock:
    """The stamp for now; the date and time are formatted once a second, not per write."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def stamp(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return b"%s.%03dZ " % (self._prefix, int((now - second) * 1000))


_clock = _Clock()


class RotatingLog:
    """Append-only file of stamped lines that rolls over to .1, .2, ... before max_bytes."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = self._open()
        self._size = self._file.tell()
        self._line_open = False  # the last byte written ended no line
        if self._size and self._last_byte() != b"\n":
            self._put(b"\n")  # an earlier daemon's child died mid-line: end that line there

    def _open(self) -> BinaryIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "ab", buffering=0)

    def _last_byte(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                return f.read(1)
        except OSError:
            return b"\n"

    def write(self, data: bytes) -> None:
        """Append a child's output; each line it starts is stamped with the time now."""
        if not data:
            return
        stamp = _clock.stamp()
        ends = data.endswith(b"\n")
        # Every newline but a final one starts a line here; a final one's line is stamped
        # when its first byte comes, which may be much later.
        text = (data[:-1] if ends else data).replace(b"\n", b"\n" + stamp)
        if ends:
            text += b"\n"
        if not self._line_open:
            text = stamp + text
        while self._size + len(text) > self.max_bytes:
            room = self.max_bytes - self._size
            cut = text.rfind(b"\n", 0, room) + 1  # the whole lines that still fit
            if cut == 0 and self._size == 0:
                cut = room  # one line longer than a whole file: it has to be split
            if cut:
                self._put(text[:cut])
                text = text[cut:]
            self._rotate()
            if self._line_open:  # the rest of a line: stamped again, so it is one line here
                text = stamp + text
                self._line_open = False
        if text:
            self._put(text)

    def _put(self, text: bytes) -> None:
        self._file.write(text)
        self._size += len(text)
        self._line_open = not text.endswith(b"\n")

    def _rotate(self) -> None:
        self._file.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            os.truncate(self.path, 0)
        self._file = self._open()
        self._size = 0

    def close(self) -> None:
        self._file.close()


class Echo:
    """Prefixes each complete line of a process's output with its coloured name."""

    def __init__(self, label: str, index: int, width: int, out: BinaryIO) -> None:
        colour = _COLOURS[index % len(_COLOURS)]
        self._prefix = f"\x1b[{colour}m{label:<{width}} |\x1b[0m ".encode()
        self._out = out
        self._partial = b""

    def write(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if lines:
            self._out.write(b"".join(self._prefix + line + b"\n" for line in lines))
            self._out.flush()

    def close(self) -> None:
        if self._partial:
            self.write(b"\n")


def split_stamp(line: str) -> tuple[str | None, str]:
    """A log line's time (ISO 8601, UTC) and text; no time for a line written unstamped."""
    if _STAMP.match(line):
        return line[: STAMP_LEN - 1], line[STAMP_LEN:]
    return None, line


def read_lines(
    path: Path, count: int | None = None, since: str | None = None, upto: int | None = None
) -> list[tuple[str | None, str]]:
    """The last `count` lines (all if None) of a log, its rotated files included, as
    (time, text), oldest first; with `since` (a time as the stamps write it) only those
    written at or after it; with `upto`, only the file's first `upto` bytes (what a
    follower that started there has not seen). Read from the end: logs can be large."""
    if count is not None and count <= 0:
        return []
    found: list[tuple[str | None, str]] = []
    for raw in _newest_first(path, upto):
        stamp, text = split_stamp(raw.decode(errors="replace").removesuffix("\r"))
        if since is not None and (stamp is None or stamp < since):
            break  # older lines come only before this one
        found.append((stamp, text))
        if len(found) == count:
            break
    found.reverse()
    return found


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a log file (or of the daemon's), without their times."""
    return [text for _, text in read_lines(path, count)]


def _newest_first(path: Path, upto: int | None = None) -> Iterator[bytes]:
    """The lines of a log (up to byte `upto`) and then of its rotated files (.1, .2, ...),
    last line first."""
    files = [path]
    while path.with_name(f"{path.name}.{len(files)}").exists():
        files.append(path.with_name(f"{path.name}.{len(files)}"))
    for file in files:
        try:
            with open(file, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                if file is path and upto is not None:
                    end = min(end, upto)
                rest = b""  # the start of a line whose beginning is in the block before
                first = True
                while end > 0:
                    start = max(0, end - _READ_BLOCK)
                    f.seek(start)
                    lines = (f.read(end - start) + rest).split(b"\n")
                    end = start
                    if first and lines[-1] == b"":
                        lines.pop()  # the newline that ends the file ends no more lines
                    first = False
                    rest = lines.pop(0)
                    yield from reversed(lines)
                if not first:
                    yield rest
        except OSError:
            continue
