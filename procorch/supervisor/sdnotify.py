"""systemd's readiness protocol: tell the service manager we are up, or stopping.

Under a unit with `Type=notify` (see `procorch export systemd`), systemd passes the
path of a datagram socket in $NOTIFY_SOCKET; `READY=1` sent there says the daemon is
up. Without the variable (not under systemd) this does nothing. A few lines with the
socket module, so no dependency on libsystemd.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send `message` (`READY=1`, `STOPPING=1`) to systemd; False if not under it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or path[0] not in "/@":
        return False
    address = "\0" + path[1:] if path[0] == "@" else path  # @: Linux's abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False  # systemd is gone or the socket is not ours: nothing to tell
    return True
