"""Listening sockets the daemon owns and hands down to a service, as circus does.

The daemon binds the gateway's TCP port itself, before any service starts, and passes
the listening socket to each Gateway process it spawns (an inherited descriptor,
named by PROCORCH_LISTEN_FD). So a port in use fails `procorch up` at once with one
line, and when the gateway dies the port stays bound: connections that arrive while
its replacement starts wait in the backlog instead of being refused.
"""

from __future__ import annotations

import errno
import os
import socket

LISTEN_FD_ENV = "PROCORCH_LISTEN_FD"
BACKLOG = 1024  # as waitress's own default


class BindError(Exception):
    """The address cannot be listened on; str() is one line for the user."""


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), inheritable by children; BindError if not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # a restarted daemon must not wait for the old connections' TIME_WAIT to end
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BindError(
                f"port {port} on {host} is already in use: stop what listens there, "
                "or choose another port ([gateway] port or GATEWAY_PORT)"
            ) from None
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def inherited_socket() -> socket.socket | None:
    """The listening socket the daemon handed down to this process, if it did."""
    fd = os.environ.get(LISTEN_FD_ENV)
    return socket.socket(fileno=int(fd)) if fd else None
