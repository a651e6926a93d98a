"""The client side of the protocol: `call` a service and wait for its reply, or `notify` it.

A call reuses an idle connection to the service or opens one to the next replica (round
robin), sends one frame and reads one frame back. A connection carries one request at a time, so a
reply can only ever reach the caller that asked; concurrent callers each hold their own
connection. A call that times out closes its connection, so the late reply reaches nobody.

Failing fast: a replica that is not listening refuses the connection at once, and the
next replica is tried; when none accepts, the call raises `Unavailable` without waiting
for its timeout. A connection the service closed while idle (it was restarted, say) fails
its send at once with EPIPE, before anything is delivered, and is replaced.

A call that fails once its request was sent (`unavailable` as the replica died, or
`timeout`) may or may not have done its work. Sent again with the same `idempotency_key`,
a request to an idempotent action (one that creates something) does it at most once and
answers as the first time (see `base.Service.commit`); the client does not retry by itself.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import struct
import time
from pathlib import Path
from typing import Any, NamedTuple

from procorch.services.protocol import (
    HEADER,
    MAX_MESSAGE,
    CallTimeout,
    Invalid,
    ServiceError,
    Unavailable,
    frame,
    loads,
    raise_for,
)
from procorch.services.protocol import request as request_message
from procorch.services.registry import Registry

DEFAULT_TIMEOUT = 5.0
REGISTRY_TTL = 1.0  # seconds a registry lookup is trusted; socket paths never change anyway
_TIMEVAL = struct.Struct("@ll")  # struct timeval
_REFUSED = (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError)
_ids = itertools.count(1)


class Reply(NamedTuple):
    """A successful reply: its data, and the id of the request it answers (a tuple: a
    call's every microsecond counts)."""

    request_id: str
    data: Any


class Client:
    """Calls services of one procorch run directory. Thread-safe; reuse one per process."""

    def __init__(
        self,
        run_dir: Path | str | None = None,
        sender: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if run_dir is None:
            run_dir = os.environ.get("PROCORCH_RUN_DIR") or ".procorch"
        self.registry = Registry(Path(run_dir))
        self.sender = sender or f"client.{os.getpid()}"
        self.timeout = timeout
        self._idle: dict[str, list[_Connection]] = {}  # service -> idle connections, LIFO
        self._turn: dict[str, itertools.count] = {}  # service -> round-robin counter
        self._sockets: dict[str, list[str]] = {}  # service -> replica socket paths
        self._paths_checked = 0.0
        self._prefix = f"{os.getpid()}-"

    # -- the two verbs ---------------------------------------------------------------

    def call(
        self,
        service: str,
        action: str,
        data: dict[str, Any] | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send a request and return the reply's data, or raise its error (`ServiceError`).

        `idempotency_key`: the same key sent again gets the first reply, and creates
        nothing more (for an action that creates something; others refuse a key)."""
        return self.request(service, action, data, timeout, idempotency_key).data

    def request(
        self,
        service: str,
        action: str,
        data: dict[str, Any] | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Reply:
        """As `call`, with the request's id beside the data (`procorch call --json` shows
        it); an error raised once the request was sent carries it as `request_id`."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        request_id = self._prefix + str(next(_ids))
        payload = _frame(
            request_message(
                request_id, action, data or {}, self.sender, idempotency_key=idempotency_key
            )
        )
        conn = self._send(service, payload, deadline)
        try:
            reply = conn.receive(deadline)
        except TimeoutError:
            conn.close()
            raise _sent_request(
                CallTimeout(f"{service}.{action}: no reply within {timeout:g}s"), request_id
            ) from None
        except (OSError, EOFError):
            conn.close()
            raise _sent_request(
                Unavailable(
                    f"{service}.{action}: {conn.label} closed the connection before replying"
                ),
                request_id,
            ) from None
        self._idle.setdefault(service, []).append(conn)
        if reply.get("request_id") != request_id:  # cannot happen: one request per connection
            raise _sent_request(
                ServiceError("internal", f"{service}.{action}: reply to another request"),
                request_id,
            )
        return Reply(request_id, raise_for(reply))

    def notify(
        self,
        service: str,
        action: str,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Send a request that gets no reply; returns once a replica has it in its socket."""
        request_id = self._prefix + str(next(_ids))
        payload = _frame(request_message(request_id, action, data or {}, self.sender, False))
        conn = self._send(service, payload, time.monotonic() + self.timeout)
        self._idle.setdefault(service, []).append(conn)

    def close(self) -> None:
        for conns in self._idle.values():
            while conns:
                conns.pop().close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- choosing a replica and a connection ------------------------------------------

    def _send(self, service: str, payload: bytes, deadline: float) -> _Connection:
        """Send `payload` to some replica of `service`; the connection it went out on.

        The connection used last is reused first: a lone caller keeps talking to one warm
        replica, and concurrent callers, finding no idle connection, open new ones
        round robin, which spreads them over the replicas.
        """
        idle = self._idle.get(service)
        while idle:
            try:
                conn = idle.pop()
            except IndexError:  # another thread took the last one
                break
            # False: the replica closed it while idle (a restart, say); EPIPE came at once,
            # with nothing delivered. Try the next idle one, or a new connection.
            if _sent(conn, payload, deadline, service):
                return conn
        paths = self._paths(service)
        turn = self._turn.get(service)
        if turn is None:
            turn = self._turn.setdefault(service, itertools.count(random.randrange(len(paths))))
        first = next(turn)
        for i in range(len(paths)):
            try:
                conn = _Connection(paths[(first + i) % len(paths)])
            except _REFUSED:
                continue  # not listening: try the next replica
            except OSError as exc:
                raise Unavailable(f"{service}: cannot connect: {exc.strerror or exc}") from None
            if _sent(conn, payload, deadline, service):
                return conn
            # it died just now: nothing was delivered, try the next one
        self._paths_checked = 0.0  # look again next time: the registry may have changed
        raise Unavailable(f"{service}: no replica is running")

    def _paths(self, service: str) -> list[str]:
        """The sockets of `service`'s replicas; from the registry, looked at every second."""
        now = time.monotonic()
        if now - self._paths_checked > REGISTRY_TTL:
            self._sockets.clear()
            self._paths_checked = now
        paths = self._sockets.get(service)
        if paths is None:
            endpoints = self.registry.lookup(service)
            paths = [str(e.socket) for e in endpoints if e.socket is not None]
            if not paths:
                raise Invalid(f"{service} is a command service: it takes no requests")
            self._sockets[service] = paths
        return paths


def _sent(conn: _Connection, payload: bytes, deadline: float, service: str) -> bool:
    """Send on `conn`: True if sent, False (and `conn` closed) if the replica hung up."""
    try:
        conn.send(payload, deadline)
        return True
    except TimeoutError:
        conn.close()
        raise CallTimeout(f"{service}: could not send within the timeout") from None
    except OSError:
        conn.close()
        return False


def _sent_request(exc: ServiceError, request_id: str) -> ServiceError:
    exc.request_id = request_id
    return exc


def _frame(message: dict[str, Any]) -> bytes:
    try:
        return frame(message)
    except ValueError as exc:  # too large
        raise Invalid(str(exc)) from None
    except TypeError as exc:  # not JSON-able
        raise Invalid(f"the data is not JSON: {exc}") from None


class _Connection:
    """One stream connection to one replica; used by one caller at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.label = Path(path).name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self._timeout: float | None = None

    def _set_timeout(self, deadline: float) -> None:
        """Make blocking socket calls give up at `deadline`.

        The kernel's SO_RCVTIMEO/SO_SNDTIMEO rather than Python's socket timeout: that one
        makes every recv a poll and a recv, and turns MSG_DONTWAIT into a wait.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        # Only a change of more than 5 ms costs a syscall; the timeout stays a timeout.
        if self._timeout is None or abs(self._timeout - remaining) > 0.005:
            seconds = int(remaining)
            value = _TIMEVAL.pack(seconds, max(1, int((remaining - seconds) * 1e6)))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            self._timeout = remaining

    def send(self, payload: bytes, deadline: float) -> None:
        self._set_timeout(deadline)
        try:
            self.sock.sendall(payload)
        except BlockingIOError:  # SO_SNDTIMEO ran out
            raise TimeoutError from None

    def receive(self, deadline: float) -> dict[str, Any]:
        chunk = self._read(deadline)
        if len(chunk) >= 4 and HEADER.unpack_from(chunk)[0] == len(chunk) - 4:
            return loads(chunk[4:])  # the usual case: the whole reply in one read
        buf = bytearray(chunk)
        while True:
            if len(buf) >= 4:
                (size,) = HEADER.unpack_from(buf)
                if size > MAX_MESSAGE:
                    raise EOFError("the reply is over the size limit")
                if len(buf) >= 4 + size:  # one request at a time: nothing can follow it
                    return loads(bytes(buf[4 : 4 + size]))
            buf += self._read(deadline)

    def _read(self, deadline: float) -> bytes:
        self._set_timeout(deadline)
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            raise TimeoutError from None
        if not chunk:
            raise EOFError("connection closed")
        return chunk

    def close(self) -> None:
        self.sock.close()
