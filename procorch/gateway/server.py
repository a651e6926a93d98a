"""Serving the app on waitress: a production WSGI server with threads.

Three things on top of waitress's defaults: the errors waitress answers itself (a body
over the limit, a malformed request line) come out as JSON like every other error;
each request is counted in the replica's statistics (`procorch status` shows the
gateway's requests and errors like any service's); and a client gets `request_deadline`
seconds to send a whole request, then 408 and the connection closed.

Why a deadline of our own: waitress has only `channel_timeout`, an inactivity timeout,
which a client sending a byte a second never reaches, so a few hundred such sockets
held the gateway's connections (`connection_limit`) for as long as they liked and new
clients waited in the backlog.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask

from procorch.config import GatewaySettings
from procorch.gateway.http import CODES, error_body

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class JsonErrorTask(ErrorTask):
    """waitress's own error answers (400, 413, 431, 500), in the gateway's JSON shape."""

    def execute(self) -> None:
        error = self.request.error
        message = f"{error.reason}: {error.body}" if error.body else error.reason
        if error.code == 413:  # as the app says it, with max_body (see make_server's + 1)
            limit = self.channel.server.adj.max_request_body_size - 1
            message = f"the request body is larger than {limit} bytes"
        body = error_body(error.code, message, CODES.get(error.code, "error"))
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


log = logging.getLogger("procorch.gateway")


class ClosingTask(WSGITask):
    """A request's answer, which once the gateway is stopping says `Connection: close`
    and closes its connection: a kept-alive client then sends its next request on a new
    connection, which waits in the daemon's socket for the next gateway process."""

    def build_response_header(self) -> bytes:
        if self.channel.server.stopping:
            self.set_close_on_finish()
        return super().build_response_header()

    def write(self, data: bytes) -> None:
        """waitress's, but a whole answer in one piece (its head and a body of the length
        it declared) is handed to the connection in one write: one send(), one packet,
        instead of the head and then the body."""
        if self.wrote_header or not data or not self.complete or self.content_length != len(data):
            return super().write(data)
        head = self.build_response_header()  # says whether a body goes (not with 1xx, 204, 304)
        self.wrote_header = True
        if not self.has_body:
            self.channel.write_soon(head)
            return super().write(data)  # waitress's account of the ignored body
        self.content_bytes_written += len(data)
        self.channel.write_soon(head + data)
        return None


class DeadlineChannel(HTTPChannel):
    """A connection that knows since when it has been waiting for its current request:
    its opening, for the first; the first byte of the request, for each later one. An
    idle kept-alive connection (no byte of a next request yet) waits for none, and is
    waitress's `channel_timeout`'s to close."""

    error_task_class = JsonErrorTask
    task_class = ClosingTask

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since: float | None = time.monotonic()

    def received(self, data: bytes) -> bool:
        partial = self.request  # a request begun in earlier reads, or None
        done = super().received(data)
        if self.request is None:  # every byte so far made whole requests
            self.waiting_since = None
        elif self.request is not partial and (partial is not None or self.waiting_since is None):
            self.waiting_since = time.monotonic()  # a new request began in this read
        return done

    def late(self, cutoff: float) -> bool:
        """Whether it has been waiting for a request since before `cutoff`; a request
        being served is the app's time, not the client's."""
        return (
            self.waiting_since is not None
            and self.waiting_since < cutoff
            and not self.requests
            and not self.will_close
            and not self.close_when_flushed
        )

    def idle(self, now: float) -> bool:
        """Whether closing it now loses nothing: no request begun, queued or being
        answered, no byte of one unread in the socket, and quiet for QUIET seconds (a
        client that just connected, or was just answered, may be sending a request:
        closing under it would fail that request; it gets its answer, which says
        `Connection: close`). `now`: time.time(), waitress's clock for activity."""
        if self.requests or self.request is not None or self.total_outbufs_len:
            return False
        if now - self.last_activity < QUIET:
            return False
        try:
            return self.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return True  # nothing to read: the client sent nothing more
        except OSError:
            return True  # reset: nothing to save


# How long a connection must have been quiet before a stopping gateway closes it.
QUIET = 0.2


class GatewayServer(TcpWSGIServer):
    """waitress's TCP server with `DeadlineChannel`s, and their deadline enforced in its
    periodic maintenance (every `cleanup_interval` seconds, on the server's own thread,
    which owns the channels)."""

    channel_class = DeadlineChannel

    def __init__(self, *args: Any, request_deadline: float, **kwargs: Any) -> None:
        self.request_deadline = request_deadline
        self.stopping = False
        super().__init__(*args, **kwargs)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # channel_timeout: idle connections
        cutoff = time.monotonic() - self.request_deadline
        late = [c for c in self.active_channels.values() if c.late(cutoff)]
        for channel in late:
            self._drop(channel)
        if late:
            log.warning(
                "dropped %d connection(s) that did not send a whole request within %g s",
                len(late),
                self.request_deadline,
            )

    def stop(self, grace: float) -> None:
        """Stop accepting, answer what the open connections were sent, close each one
        once it is idle, then stop the threads; at most `grace` seconds. From any thread.

        Connections not accepted yet stay in the daemon's listening socket for the next
        gateway process, so a restart fails no request: closing a connection with a
        request unread in it would reset it (and closing the listening socket is not
        needed: this process merely stops taking connections from it)."""
        deadline = time.monotonic() + grace
        self._on_loop(self._stop_accepting)
        while time.monotonic() < deadline and self._on_loop(self._close_idle):
            time.sleep(0.01)
        left = max(0.0, deadline - time.monotonic())
        self.task_dispatcher.shutdown(cancel_pending=False, timeout=left)

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        """`fn()` run on the server's own thread, which owns the channels; None if that
        thread does not run it within a second (it died)."""
        done = threading.Event()
        result: list[Any] = []

        def run() -> None:
            result.append(fn())
            done.set()

        self.trigger.pull_trigger(run)
        return result[0] if done.wait(1.0) else None

    def _stop_accepting(self) -> None:
        self.stopping = True  # each answer from now on closes its connection
        self.accepting = False  # readable() is False from now on: no accept()

    def _close_idle(self) -> int:
        """Close the idle connections (see DeadlineChannel.idle); how many are not."""
        now = time.time()
        busy = 0
        for channel in list(self.active_channels.values()):
            if channel.will_close or not channel.connected:
                continue
            if channel.idle(now):
                channel.will_close = True  # closed by the loop, now that it is writable
            else:
                busy += 1
        return busy

    def _drop(self, channel: DeadlineChannel) -> None:
        """408 as JSON if nothing else is on its way out, then close once it is sent."""
        if not channel.total_outbufs_len and channel.connected:
            message = f"the request was not complete within {self.request_deadline:g} s"
            body = error_body(408, message, "timeout")
            head = (
                "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            # no task runs on it and its buffers are empty: write_soon cannot block here
            channel.write_soon(head.encode() + body)
        channel.close_when_flushed = True


def counted(app: WSGIApp, count: Callable[[float, bool], None]) -> WSGIApp:
    """`app`, calling `count(seconds, failed)` once per request (failed: a 4xx or 5xx)."""

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        failed = True  # an app that raises before answering has failed

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal failed
            failed = status[0] in "45"
            return start_response(status, headers, exc_info)

        try:
            return app(environ, start)
        finally:
            count(time.perf_counter() - started, failed)

    return wsgi


def make_server(app: WSGIApp, sock: socket.socket, settings: GatewaySettings) -> GatewayServer:
    """A waitress server for `app` on the listening socket `sock` (not started).

    Built as waitress's `create_server` builds one for one socket, with our server class."""
    adj = Adjustments(
        sockets=[sock],
        threads=settings.threads,
        # waitress refuses a body of max_request_body_size bytes or more; max_body is the
        # largest allowed (as Flask's MAX_CONTENT_LENGTH, the config and the docs say)
        max_request_body_size=settings.max_body + 1,
        connection_limit=settings.connection_limit,  # beyond it, connections wait in the backlog
        # how often maintenance looks for late requests (waitress's default: 30 s)
        cleanup_interval=1,
        asyncore_use_poll=True,  # select() fails past fd 1024
        ident="procorch",
        clear_untrusted_proxy_headers=True,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    return GatewayServer(
        app,
        map={},
        _sock=sock,
        dispatcher=dispatcher,
        adj=adj,
        bind_socket=False,
        sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
        request_deadline=settings.request_deadline,
    )
