"""Listening sockets the daemon owns and hands down to a service, as circus does.

The daemon binds the gateway's TCP port itself, before any service starts, and passes
the listening socket to each Gateway process it spawns (an inherited descriptor,
named by PROCORCH_LISTEN_FD). So a port in use fails `procorch up` at once with one
line, and when the gateway dies the port stays bound: connections that arrive while
its replacement starts wait in the backlog instead of being refused.

While no gateway process runs or is on its way (FATAL, stopped, exited), a connection
would wait in that backlog for nothing: then the daemon accepts it itself and answers
503 at once (`unavailable_response`), keeping the port so nothing else can take it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Iterable

from procorch.supervisor.state import ProcessState

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


def gateway_expected(replicas: Iterable[tuple[ProcessState, bool]]) -> bool:
    """Whether some gateway process runs or is coming, given each replica's (state,
    whether it is wanted running); if not, the daemon answers its port itself."""
    # A replica with a process, or with one shortly (BACKOFF is a pause of at most
    # backoff_max): connections wait in the backlog for it.
    return any(
        state.has_process
        or state is ProcessState.BACKOFF
        or (state is ProcessState.STOPPED and wanted)
        for state, wanted in replicas
    )


def unavailable_response(message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 503 answer, with the gateway's JSON error body."""
    body = json.dumps({"status": "error", "code": "unavailable", "message": message}).encode()
    head = [
        "HTTP/1.1 503 Service Unavailable",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        head.append(f"Retry-After: {max(1, retry_after)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
