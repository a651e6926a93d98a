"""Process output: a size-rotated log file per replica, and the coloured echo of `--foreground`.

The daemon reads each child's stdout+stderr pipe and hands the bytes here, as
supervisord and circus do, so rotation never needs the child's cooperation.

Each line in a log file starts with the time it reached the daemon, UTC to the
millisecond (`2026-12-02T08:41:32.123Z `), so `procorch logs -t/--since` can tell
when it was written; readers strip it unless asked (`read_lines`, `tail_lines`).
A file rolls over only between whole lines, and never grows past its size; with
`log_rotate = "hourly"` or `"daily"` also at the first write of each new hour or day
(local time, as logrotate and cron count days). `reopen` opens the file at its path
again, for logrotate's `postrotate` (SIGUSR2, `procorch logs --reopen`).

The stamps are always written, for `logs -t/--since` and to merge replicas by time;
`log_timestamps` only decides whether they are shown (`logs`, `up --foreground`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"

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


def period(when: float, rotate: str) -> tuple[int, ...] | None:
    """The stretch of local time `when` falls in, for rotation by time ("hourly",
    "daily"); None for rotation by size alone. A new stretch means a new file."""
    if rotate not in ("hourly", "daily"):
        return None
    t = time.localtime(when)
    day = (t.tm_year, t.tm_yday)
    return (*day, t.tm_hour) if rotate == "hourly" else day


class RotatingLog:
    """Append-only file of stamped lines that rolls over to .1, .2, ... before max_bytes
    (and, with `rotate`, at each new hour or day)."""

    def __init__(self, path: Path, max_bytes: int, backups: int, rotate: str = "size") -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.rotate = rotate
        self._file = self._open()
        self._size = self._file.tell()
        # a file last written in an earlier hour or day rolls over at its first new line
        written = os.fstat(self._file.fileno()).st_mtime if self._size else time.time()
        self._period = period(written, rotate)
        self.run_start = self._size  # where the current process's output starts in the file
        self.dropped = 0  # bytes of output the disk refused
        self._line_open = False  # the last byte written ended no line
        if self._size and self._last_byte() != b"\n":
            with contextlib.suppress(OSError):  # a full disk: the line stays open, no harm
                self._put(b"\n")  # an earlier daemon's child died mid-line: end that line

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

    def write(self, data: bytes) -> OSError | None:
        """Append a child's output, each line it starts stamped with the time now; what
        the disk refuses (ENOSPC) is dropped, counted, and the error returned.

        Never raises for it: the daemon must keep reading the pipe, or the service
        would block on a full one.
        """
        if not data:
            return None
        stamp = _clock.stamp()
        ends = data.endswith(b"\n")
        # Every newline but a final one starts a line here; a final one's line is stamped
        # when its first byte comes, which may be much later.
        text = (data[:-1] if ends else data).replace(b"\n", b"\n" + stamp)
        if ends:
            text += b"\n"
        if not self._line_open:
            text = stamp + text
        before = self._size  # `text` starts here: what of it got in is _size - before
        try:
            if self._period is not None and (now := period(time.time(), self.rotate)):
                if now != self._period:
                    self._period = now
                    if self._size:
                        self._rotate()
                        before = 0
                        if self._line_open:  # the rest of a line: a line of its own there
                            text = stamp + text
                            self._line_open = False
            while self._size + len(text) > self.max_bytes:
                room = self.max_bytes - self._size
                cut = text.rfind(b"\n", 0, room) + 1  # the whole lines that still fit
                if cut == 0 and self._size == 0:
                    cut = room  # one line longer than a whole file: it has to be split
                if cut:
                    self._put(text[:cut])
                    text = text[cut:]
                before = self._size
                self._rotate()
                before = self._size  # 0: a new file
                if self._line_open:  # the rest of a line: stamped again, one line here
                    text = stamp + text
                    self._line_open = False
            if text:
                self._put(text)
                text = b""
        except OSError as exc:
            self.dropped += len(text) - (self._size - before)  # what never got in
            return exc
        return None

    def _put(self, text: bytes) -> None:
        """Write all of `text` (a write can take only part of it); what was written is
        counted in the size even when the disk refuses the rest."""
        written = 0
        try:
            while written < len(text):
                written += self._file.write(text[written:]) or 0
        finally:
            self._size += written
            if written:
                self._line_open = not text[:written].endswith(b"\n")

    def mark_run(self) -> None:
        """A new process of the replica starts writing here, on a line of its own."""
        if self._line_open:  # the last one died mid-line
            with contextlib.suppress(OSError):
                self._put(b"\n")
        self.run_start = self._size

    def _rotate(self) -> None:
        if not self.path.exists():
            pass  # renamed by an attempt that could not open the new file (no space)
        elif self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            os.truncate(self.path, 0)
        # the new file first: if it cannot be opened, the old one (renamed) is still open
        self._file, old = self._open(), self._file
        old.close()
        self._size = 0
        # Whatever the new file gets is the current run's; its start went to the backup.
        self.run_start = 0

    def set_limits(self, max_bytes: int, backups: int, rotate: str) -> None:
        """New rotation settings (a reload), from the next line on."""
        self.max_bytes, self.backups = max_bytes, backups
        if rotate != self.rotate:
            self.rotate = rotate
            self._period = period(time.time(), rotate)

    def reopen(self) -> None:
        """Write to whatever file is at the path now (created if none is): logrotate
        renamed the old one. Raises OSError if it cannot be opened (the old one stays)."""
        new = self._open()
        renamed = os.fstat(new.fileno()).st_ino != os.fstat(self._file.fileno()).st_ino
        self._file, old = new, self._file
        old.close()
        self._size = new.tell()
        if renamed:
            self.run_start = self._size  # the run's earlier lines went with the old file
            self._line_open = False  # what follows a line cut there is a line of its own

    def close(self) -> None:
        self._file.close()


def reopen_fd(path: Path, fd: int) -> None:
    """Point `fd` (the detached daemon's stderr, and stdout if it is the same file) at
    `path` again, created if it is not there. Raises OSError if it cannot be opened."""
    new = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        old = os.fstat(fd)
        targets = [fd]
        with contextlib.suppress(OSError):
            if fd != 1 and os.path.samestat(os.fstat(1), old):
                targets.append(1)
        for target in targets:
            os.dup2(new, target, inheritable=target <= 2)
    finally:
        os.close(new)


class DaemonLogHandler(logging.Handler):
    """The daemon's own log (daemon.log, its stderr), written with one write per record.

    A record the disk refuses is dropped and `refused` told; never retried, and never a
    traceback, which logging would print to the very file that is full.
    """

    def __init__(self, fd: int, refused: Callable[[OSError], None]) -> None:
        super().__init__()
        self.fd = fd
        self.refused = refused
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # a bad format string in a call: logging's own report
            self.handleError(record)
            return
        try:
            os.write(self.fd, line.encode(errors="replace"))
        except OSError as exc:
            self.refused(exc)


def wants_colour(out: BinaryIO) -> bool:
    """Colour for a terminal only, and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return os.isatty(out.fileno())
    except (OSError, ValueError):
        return False


class Echo:
    """Prefixes each complete line of a process's output with its name, coloured on a terminal."""

    def __init__(
        self,
        label: str,
        index: int,
        width: int,
        out: BinaryIO,
        colour: bool,
        timestamps: bool = False,
    ) -> None:
        prefix = f"{label:<{width}} |"
        if colour:
            prefix = f"\x1b[{_COLOURS[index % len(_COLOURS)]}m{prefix}\x1b[0m"
        self._prefix = f"{prefix} ".encode()
        self._out = out
        self._partial = b""
        self._timestamps = timestamps  # log_timestamps: each line with its time, as `logs -t`

    def write(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if lines:
            prefix = self._prefix + _clock.stamp() if self._timestamps else self._prefix
            try:
                self._out.write(b"".join(prefix + line + b"\n" for line in lines))
                self._out.flush()
            except OSError:
                pass  # stdout is a file on a full disk, or gone: the log file has it all

    def close(self) -> None:
        if self._partial:
            self.write(b"\n")


def split_stamp(line: str) -> tuple[str | None, str]:
    """A log line's time (ISO 8601, UTC) and text; no time for a line written unstamped."""
    if _STAMP.match(line):
        return line[: STAMP_LEN - 1], line[STAMP_LEN:]
    return None, line


def read_lines(
    path: Path,
    count: int | None = None,
    since: str | None = None,
    upto: int | None = None,
    start: int | None = None,
) -> list[tuple[str | None, str]]:
    """The last `count` lines (all if None) of a log, its rotated files included, as
    (time, text), oldest first; with `since` (a time as the stamps write it) only those
    written at or after it; with `upto`, only the file's first `upto` bytes (what a
    follower that started there has not seen); with `start`, only the current file's lines
    from that byte on (a file now shorter was rotated since: all of it is newer). Read
    from the end: logs can be large."""
    if count is not None and count <= 0:
        return []
    found: list[tuple[str | None, str]] = []
    for raw in _newest_first(path, upto, start):
        stamp, text = split_stamp(raw.decode(errors="replace").removesuffix("\r"))
        if since is not None and (stamp is None or stamp < since):
            break  # older lines come only before this one
        found.append((stamp, text))
        if len(found) == count:
            break
    found.reverse()
    return found


def tail_lines(path: Path, count: int, start: int | None = None) -> list[str]:
    """The last `count` lines of a log file (or of the daemon's), without their times;
    with `start`, only those from that byte of the current file on (one run's lines)."""
    return [text for _, text in read_lines(path, count, start=start)]


def lines_since(path: Path, offset: int, most: int = 256 * 1024) -> tuple[list[str], int]:
    """The whole lines written to a log from byte `offset` on, at most `most` bytes of
    them, and the offset to read from next time (a line still being written waits for
    then). A file now shorter than `offset` was rotated: it is read from its start."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            if offset > end:
                offset = 0
            f.seek(offset)
            data = f.read(min(end - offset, most))
    except OSError:
        return [], offset
    whole, newline, _ = data.rpartition(b"\n")
    if not newline:
        return [], offset
    return whole.decode(errors="replace").split("\n"), offset + len(whole) + 1


def size_of(path: Path) -> int:
    """A file's size, 0 if there is none (yet)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _newest_first(path: Path, upto: int | None = None, start: int | None = None) -> Iterator[bytes]:
    """The lines of a log (up to byte `upto`) and then of its rotated files (.1, .2, ...),
    last line first; with `start`, only the log's own lines from byte `start` on."""
    files = [path]
    while start is None and path.with_name(f"{path.name}.{len(files)}").exists():
        files.append(path.with_name(f"{path.name}.{len(files)}"))
    for file in files:
        try:
            with open(file, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                floor = start if start is not None and start <= end else 0
                if file is path and upto is not None:
                    end = min(end, upto)
                rest = b""  # the start of a line whose beginning is in the block before
                first = True
                while end > floor:
                    begin = max(floor, end - _READ_BLOCK)
                    f.seek(begin)
                    lines = (f.read(end - begin) + rest).split(b"\n")
                    end = begin
                    if first and lines[-1] == b"":
                        lines.pop()  # the newline that ends the file ends no more lines
                    first = False
                    rest = lines.pop(0)
                    yield from reversed(lines)
                if not first:
                    yield rest
        except OSError:
            continue
