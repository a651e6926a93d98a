"""The control socket: how the CLI talks to the daemon.

A Unix stream socket in the run directory, owner-only. Each request is one JSON
object on one line, `{"cmd": "status", ...}`; the daemon answers with JSON lines:
zero or more `{"progress": ...}` lines for commands that wait, then one final
line with `"ok": true` or `"ok": false, "error": "..."`. JSON only: nothing read
from the socket is ever unpickled or evaluated.

This module is imported by the CLI, so it stays light (json and socket only).
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_REQUEST = 64 * 1024


class DaemonNotRunning(Exception):
    """No daemon answers on the run directory's control socket."""


class ControlError(Exception):
    """The daemon refused the request (unknown service, ...); str() is its message,
    `reply` the whole answer."""

    def __init__(self, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply = reply or {}


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


ASK_TIMEOUT = 5.0  # seconds: a daemon slower than this to answer a question is given up on


def connect(socket_path: Path, message: dict[str, Any], timeout: float | None) -> socket.socket:
    """A connection to the daemon with `message` sent on it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(socket_path))
        sock.sendall(encode(message))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise DaemonNotRunning(str(socket_path)) from exc
    return sock


def request(
    socket_path: Path,
    message: dict[str, Any],
    *,
    timeout: float | None = 10.0,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send one request and return the final reply; progress lines go to `on_progress`."""
    sock = connect(socket_path, message, timeout)
    try:
        reader = sock.makefile("rb")
        for line in reader:
            reply = json.loads(line)
            if "progress" in reply:
                if on_progress is not None:
                    on_progress(reply["progress"])
                continue
            if not reply.pop("ok", False):
                raise ControlError(reply.get("error", "request failed"), reply)
            return reply
        raise DaemonNotRunning("the daemon closed the connection")
    finally:
        sock.close()


def first_reply(sock: socket.socket) -> dict[str, Any]:
    """The daemon's first line on `sock` ({} if it closed without one)."""
    line = sock.makefile("rb").readline()
    return json.loads(line) if line else {}


def wait_closed(sock: socket.socket, deadline: float) -> bool:
    """Block until the daemon closes `sock` (it is exiting); False if `deadline` (a
    time.monotonic() value) passes first. Anything more it sends is ignored."""
    while True:
        sock.settimeout(max(0.0, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True


def wait_exited(pid: int | None, timeout: float) -> bool:
    """Wait until process `pid` has exited (a zombie counts: it runs no more); False on
    timeout. The daemon closes its socket just before it exits; a pidfd says when it has."""
    if not pid:
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(fd)
