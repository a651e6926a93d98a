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
import socket
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


def _send(socket_path: Path, message: dict[str, Any], timeout: float | None) -> socket.socket:
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
    sock = _send(socket_path, message, timeout)
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


def wait_closed(socket_path: Path, message: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send a request, then block until the daemon closes the connection (it exited)."""
    sock = _send(socket_path, message, timeout)
    try:
        reader = sock.makefile("rb")
        first = reader.readline()
        reply = json.loads(first) if first else {"ok": True}
        while reader.readline():  # anything more is ignored; EOF means the daemon is gone
            pass
        return reply
    finally:
        sock.close()
