"""Process output: a size-rotated log file per replica, and the coloured echo of `--foreground`.

The daemon reads each child's stdout+stderr pipe and hands the bytes here, as
supervisord and circus do, so rotation never needs the child's cooperation.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"

_COLOURS = (36, 33, 32, 35, 34, 91, 96, 93, 92, 95, 94)


class RotatingLog:
    """Append-only file that rolls over to .1, .2, ... when it passes max_bytes."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = self._open()
        self._size = self._file.tell()
        self.run_start = self._size  # where the current process's output starts in the file
        self.dropped = 0  # bytes of output the disk refused

    def _open(self) -> BinaryIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "ab", buffering=0)

    def write(self, data: bytes) -> OSError | None:
        """Append `data`; what the disk refused (ENOSPC) is dropped, and the error returned.

        Never raises for it: the daemon must keep reading the pipe, or the service
        would block on a full one.
        """
        written = 0
        try:
            if self._size + len(data) > self.max_bytes and self._size > 0:
                self._rotate()
            while written < len(data):  # a write can take only part of it
                written += self._file.write(data[written:]) or 0
        except OSError as exc:
            self.dropped += len(data) - written
            return exc
        finally:
            self._size += written
        return None

    def mark_run(self) -> None:
        """A new process of the replica starts writing here."""
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

    def close(self) -> None:
        self._file.close()


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

    def __init__(self, label: str, index: int, width: int, out: BinaryIO, colour: bool) -> None:
        prefix = f"{label:<{width}} |"
        if colour:
            prefix = f"\x1b[{_COLOURS[index % len(_COLOURS)]}m{prefix}\x1b[0m"
        self._prefix = f"{prefix} ".encode()
        self._out = out
        self._partial = b""

    def write(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if lines:
            try:
                self._out.write(b"".join(self._prefix + line + b"\n" for line in lines))
                self._out.flush()
            except OSError:
                pass  # stdout is a file on a full disk, or gone: the log file has it all

    def close(self) -> None:
        if self._partial:
            self.write(b"\n")


def tail_lines(path: Path, count: int, start: int = 0) -> list[str]:
    """The last `count` lines of a log file after byte `start`, read from the end (logs
    can be large). A file now shorter than `start` was rotated since: all of it is newer."""
    if count <= 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            if end < start:
                start = 0
            block, data = 8192, b""
            while end > start and data.count(b"\n") <= count:
                begin = max(start, end - block)
                f.seek(begin)
                data = f.read(end - begin) + data
                end = begin
    except OSError:
        return []
    lines: deque[str] = deque(data.decode(errors="replace").splitlines(), maxlen=count)
    return list(lines)
