"""The run directory: lock, pid file, control socket path, state snapshot, event log.

Everything a daemon leaves on disk lives here, owner-only. The lock (an flock on
`daemon.lock`) is what makes a second daemon impossible: the kernel drops it when
the daemon dies, even by SIGKILL, so a stale pid file can never block `up`.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from procorch.config import EXIT_NOTE_DIR, SOCKET_NAME


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

    def write_atomic(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def write_state(self, state: dict[str, Any]) -> None:
        self.write_atomic(self.state_file, json.dumps(state))

    def read_state(self) -> dict[str, Any] | None:
        """The last snapshot, or None if there is none or it is unreadable."""
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- the event log -------------------------------------------------------------

    def open_events(self):  # noqa: ANN201 - a text file object
        fd = os.open(self.events_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", buffering=1)

    def read_events(self, limit: int | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.events_file.read_text().splitlines()
        except OSError:
            return []
        if limit is not None:
            lines = lines[-limit:] if limit > 0 else []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash; the rest is still good
        return events

    def log_path(self, service: str, replica: int) -> Path:
        return self.logs / f"{service}.{replica}.log"


def now_iso() -> str:
    """Wall-clock time for humans and logs, UTC, ISO 8601."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
