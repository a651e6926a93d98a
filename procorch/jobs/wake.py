"""Wake-ups without polling: Unix datagram sockets in a directory of the run directory.

Each sleeper (an idle worker, a client waiting for a job) binds a socket in a
directory; whoever has news (a submit, a finished job) sends one byte to every
socket there. The directories are inside the owner-only run directory, so only the
owner can wake anyone, and the byte carries no data: a sleeper only looks again.
A socket whose owner died is removed by the first sender that finds it refusing.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import time
from pathlib import Path

from procorch.config import MAX_SOCKET_PATH

_counter = itertools.count()


class Sleeper:
    """A bound socket to wait on; falls back to short sleeps if it cannot be bound."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / f"{os.getpid()}.{next(_counter)}"
        self.sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        try:
            if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
                raise OSError("path too long")
            self.path.unlink(missing_ok=True)  # a dead process with our pid left it
            self.sock.bind(str(self.path))
            os.chmod(self.path, 0o600)  # owner-only, whatever the umask of who binds it
        except OSError:
            # a run directory too deep for socket paths: still correct, only slower
            self.sock.close()
            self.sock = None

    def wait(self, timeout: float) -> bool:
        """Block until woken or `timeout` s; True if woken. Drains pending wake-ups."""
        if self.sock is None:
            time.sleep(min(timeout, 0.01))
            return True
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if ready:
            self.drain()
        return bool(ready)

    def drain(self) -> None:
        if self.sock is None:
            return
        try:
            while True:
                self.sock.recv(64)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.path.unlink(missing_ok=True)


class Bell:
    """Sends the wake-up byte to every sleeper in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def ring(self) -> None:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                self.sock.sendto(b"!", path)
            except BlockingIOError:
                pass  # its queue is full: it has wake-ups waiting already
            except (ConnectionRefusedError, FileNotFoundError):
                try:
                    os.unlink(path)  # nobody listens there any more
                except OSError:
                    pass
            except OSError:
                pass  # a stray file or a path too long: nothing to wake

    def close(self) -> None:
        self.sock.close()
