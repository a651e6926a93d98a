"""The run directory: lock, pid file, control socket path, state snapshot, event log.

Everything a daemon leaves on disk lives here, owner-only. The lock (an flock on
`daemon.lock`) is what makes a second daemon impossible: the kernel drops it when
the daemon dies, even by SIGKILL, so a stale pid file can never block `up`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from procorch.config import EXIT_NOTE_DIR
from procorch.locate import SOCKET_NAME


class BadState(Exception):
    """state.json is there but is not a snapshot the daemon wrote; str() is one line.

    Readers (the registry, so the CLI and the gateway) fail with this alone; the daemon
    rewrites the file at its next health check.
    """


# What each process entry of a snapshot holds, and the types it may have.
_PROCESS_FIELDS: dict[str, tuple[type, ...]] = {
    "service": (str,),
    "replica": (int,),
    "state": (str,),
    "pid": (int, type(None)),
    "restarts": (int,),
    "socket": (str, type(None)),
    "registered_at": (str, type(None)),
    "slot": (int, type(None)),
}


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_file = path / "daemon.lock"
        self.pid_file = path / "procorch.pid"
        self.socket = path / SOCKET_NAME
        self.state_file = path / "state.json"
        self.config_file = path / "config.json"  # the resolved config, for services to read
        self.events_file = path / "events.log"
        self.stats_file = path / "stats.bin"
        self.daemon_log = path / "daemon.log"
        self.logs = path / "logs"
        self.exit_notes = path / EXIT_NOTE_DIR
        self._lock_fd: int | None = None

    def create(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        self.logs.mkdir(mode=0o700, exist_ok=True)
        self.exit_notes.mkdir(mode=0o700, exist_ok=True)

    # -- the lock -------------------------------------------------------------

    def acquire_lock(self) -> bool:
        """Take the daemon lock for this process; False if another daemon holds it."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def daemon_alive(self) -> bool:
        """Whether some daemon holds the lock (checked without keeping it)."""
        if not self.lock_file.exists():
            return False
        fd = os.open(self.lock_file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # -- files written atomically ------------------------------------------------

    def write_atomic(self, path: Path, text: str) -> os.stat_result:
        """`write_atomic(path, text)`: the run directory's files are the daemon's alone."""
        return write_atomic(path, text)

    def write_state(self, state: dict[str, Any]) -> os.stat_result:
        return self.write_atomic(self.state_file, json.dumps(state))

    def read_state(self) -> dict[str, Any] | None:
        """The last snapshot, or None if there is none; BadState if it is not one."""
        try:
            text = self.state_file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BadState(f"cannot read {self.state_file}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deep
            raise BadState(f"{self.state_file} is corrupt (not JSON)") from None
        problem = snapshot_problem(data)
        if problem:
            raise BadState(f"{self.state_file} is corrupt ({problem})")
        return data

    def crashed_token(self) -> str | None:
        """The run token of a daemon that did not stop cleanly, from its last snapshot.

        Lenient on purpose, unlike `read_state`: only the token is needed, and it can
        only match processes that daemon started (see `reclaim`)."""
        try:
            data = json.loads(self.state_file.read_bytes())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("clean"):
            return None
        token = data.get("token")
        return token if isinstance(token, str) else None

    # -- the event log -------------------------------------------------------------

    def open_events(self) -> AppendLog:
        return AppendLog(self.events_file)

    def log_path(self, service: str, replica: int) -> Path:
        return self.logs / f"{service}.{replica}.log"

    def err_log_path(self, service: str, replica: int) -> Path:
        """Where a replica's stderr goes when its service has `stderr = "separate"`."""
        return self.logs / f"{service}.{replica}.err.log"


class AppendLog:
    """A file appended one whole line at a time (events.log).

    A line the disk takes only part of is cut off again, so a full disk never leaves
    half a line for the next one to be glued to.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def reopen(self) -> None:
        """Append to whatever file is at the path now (logrotate renamed the old one)."""
        self._fd, old = self._open(), self._fd
        os.close(old)

    def append(self, line: str) -> None:
        """Write `line` whole or not at all; OSError (ENOSPC: disk full) if not."""
        data = line.encode()
        written = os.write(self._fd, data)  # one write(2): an error means nothing was written
        if written < len(data):
            # a truncation needs no space; if even that fails, readers skip the half line
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "events.log")


def snapshot_problem(data: Any) -> str | None:
    """What makes `data` not a snapshot as the daemon writes it (None: nothing)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("token"), str):
        return "token: expected a string"
    processes = data.get("processes")
    if not isinstance(processes, list):
        return "processes: expected a list"
    for i, entry in enumerate(processes):
        if not isinstance(entry, dict):
            return f"processes[{i}]: expected an object"
        for key, types in _PROCESS_FIELDS.items():
            value = entry.get(key)
            if not isinstance(value, types) or isinstance(value, bool):
                return f"processes[{i}].{key}: unexpected {type(value).__name__}"
    return None


def now_iso() -> str:
    """Wall-clock time for humans and logs, UTC, ISO 8601."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def write_atomic(path: Path, text: str, mode: int | None = None) -> os.stat_result:
    """Replace `path` by `text` all at once; returns what the new file is (stat).

    The temp file is 0600 from its creation (the text may hold a token or a password),
    then `mode` (the replaced file's, say) just before it takes the file's place.
    Raises OSError (a full disk: ENOSPC) with `path` left as it was and no temp file
    left behind.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            written = os.fstat(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written copy would only take space
        raise
    return written
