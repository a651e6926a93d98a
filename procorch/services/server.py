"""The server side of the protocol: a replica's listening socket and its connections.

Each replica listens on its own Unix socket (owner-only, in the run directory). Every
connection gets a thread that reads a frame, hands it to the service, and writes the
reply back before reading the next one, so replies on a connection come back in order
and one slow action holds up only its own caller. A bad frame gets an error reply and
the connection carries on; only a frame over the size limit ends its connection, since
the stream cannot be trusted after it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from procorch.services.protocol import HEADER, MAX_MESSAGE, error, frame

Handler = Callable[[bytes], "bytes | None"]  # a request frame's body -> reply frame or None


class RequestServer:
    def __init__(self, path: Path, handle: Handler) -> None:
        self.path = path
        self.handle = handle
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._busy: set[socket.socket] = set()  # connections with a request being handled

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by this replica's previous process
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is born owner-only
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        listener.listen(512)
        self._inode = os.stat(self.path).st_ino
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="accept", daemon=True).start()

    def close(self, grace: float = 2.0) -> None:
        """Stop accepting, let requests in progress finish (up to `grace` s), hang up."""
        if self._listener is not None:
            # only our own file: during a rolling restart a replacement for this replica
            # has bound the same path already, and its callers are on their way
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == self._inode:
                    self.path.unlink()
            self._listener.close()
        deadline = time.monotonic() + grace
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.01)
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: we are stopping
            self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        recv, sendall, handle, busy = conn.recv, conn.sendall, self.handle, self._busy
        buf = b""
        try:
            while True:
                chunk = recv(65536)
                if not chunk:
                    return
                buf = buf + chunk if buf else chunk
                while len(buf) >= 4:
                    (size,) = HEADER.unpack_from(buf)
                    if size > MAX_MESSAGE:
                        problem = f"frame of {size} bytes is over the {MAX_MESSAGE}-byte limit"
                        sendall(frame(error(None, "too_large", problem)))
                        return
                    end = 4 + size
                    if len(buf) < end:
                        break  # the rest of this frame is still on its way
                    body, buf = buf[4:end], buf[end:]
                    busy.add(conn)
                    try:
                        reply = handle(body)
                    finally:
                        busy.discard(conn)
                    if reply is not None:
                        sendall(reply)
        except OSError:
            return  # the caller went away (or gave up waiting): nobody to answer
        finally:
            self._connections.discard(conn)
            conn.close()
