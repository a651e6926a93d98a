"""Listening sockets the daemon owns and hands down to a service, as circus does.

The daemon binds the gateway's TCP port itself, before any service starts, and passes
the listening socket to each Gateway process it spawns (an inherited descriptor,
named by PROCORCH_LISTEN_FD). So a port in use fails `procorch up` at once with one
line, and when the gateway dies the port stays bound: connections that arrive while
its replacement starts wait in the backlog instead of being refused.

Any command service may ask for sockets the same way (`listen = [...]`): the daemon
binds them before any service starts, keeps them for as long as a service lists them
(across restarts, rolling restarts and reloads: nothing is ever refused while a
replica is replaced) and hands them to every replica with systemd's convention, fds
3, 4, ... with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES (`handoff_argv`).

While no gateway process runs or is on its way (FATAL, stopped, exited), a connection
would wait in that backlog for nothing: then the daemon accepts it itself and answers
503 at once (`unavailable_response`), keeping the port so nothing else can take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from procorch.supervisor.state import ProcessState

LISTEN_FD_ENV = "PROCORCH_LISTEN_FD"
BACKLOG = 1024  # as waitress's own default
SD_LISTEN_FDS_START = 3  # systemd's: the first handed-down socket is fd 3
HELD_FDS_FROM = 64  # held sockets live at fds >= this, never where they are handed to
_BASH = shutil.which("bash")  # dash's redirections take one-digit fds only
# without bash: the same moves in Python (slower to start: ~10 ms against ~1 ms)
_PY_HANDOFF = (
    "import os,sys\n"
    "n=int(sys.argv[1]);fds=[int(f) for f in sys.argv[2:2+n]]\n"
    "for i,fd in enumerate(fds):os.dup2(fd,3+i);os.close(fd)\n"
    "os.environ['LISTEN_PID']=str(os.getpid())\n"
    "os.execv(sys.argv[2+n],sys.argv[2+n:])"
)


class BindError(Exception):
    """The address cannot be listened on; str() is one line for the user."""


_GATEWAY_HINT = "choose another port ([gateway] port or GATEWAY_PORT)"


def bind_tcp(host: str, port: int, hint: str = _GATEWAY_HINT) -> socket.socket:
    """A listening TCP socket on (host, port), inheritable by children; BindError if not.
    `hint` ends the message for a port in use."""
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
                f"port {port} on {host} is already in use: stop what listens there, or {hint}"
            ) from None
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def bind_unix(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, owner-only from its first instant; a socket
    file nobody listens on (left by a crash) is replaced, anything else is a BindError."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with probe:
                if probe.connect_ex(str(path)) == 0:
                    raise BindError(f"{path} is already in use: stop what listens there")
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise BindError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    return sock


def bind_address(address: str) -> socket.socket:
    """Bind a `listen` address ("tcp://HOST:PORT" or "unix:///PATH", as the config
    normalizes them) at a descriptor >= HELD_FDS_FROM; BindError if it cannot be."""
    scheme, _, rest = address.partition("://")
    if scheme == "unix":
        sock = bind_unix(Path(rest))
    else:
        host, _, port = rest.rpartition(":")
        sock = bind_tcp(host.strip("[]"), int(port), "choose another one in `listen`")
    # out of the range 3... that replicas get them at, so the moves cannot collide
    high = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, HELD_FDS_FROM)
    held = socket.socket(sock.family, sock.type, fileno=high)
    sock.close()
    return held


def release_address(address: str, sock: socket.socket) -> None:
    """Close a held socket; a Unix socket's file goes with it."""
    sock.close()
    scheme, _, rest = address.partition("://")
    if scheme == "unix":
        with contextlib.suppress(OSError):
            os.unlink(rest)


def handoff_env(count: int, name: str) -> dict[str, str]:
    """systemd's variables for `count` sockets at fds 3... (LISTEN_PID is set by
    `handoff_argv`: only the child knows its pid, and Popen's fast path cannot set it)."""
    return {"LISTEN_FDS": str(count), "LISTEN_FDNAMES": ":".join([name] * count)}


def handoff_argv(fds: Sequence[int], argv: Sequence[str]) -> list[str]:
    """`argv` run with the descriptors `fds` (all >= HELD_FDS_FROM) moved to 3, 4, ...
    and LISTEN_PID set to its own pid: through bash, which then execs it (same pid)."""
    if _BASH:
        moves = " ".join(f"{SD_LISTEN_FDS_START + i}<&{fd} {fd}<&-" for i, fd in enumerate(fds))
        script = f'exec {moves}; export LISTEN_PID=$$; exec "$@"'
        return [_BASH, "-c", script, "procorch-listen", *argv]
    return [sys.executable, "-I", "-S", "-c", _PY_HANDOFF, str(len(fds)), *map(str, fds), *argv]


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
