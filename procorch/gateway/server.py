"""Serving the app on waitress: a production WSGI server with threads.

Two things on top of waitress's defaults: the errors waitress answers itself (a body
over the limit, a malformed request line) come out as JSON like every other error,
and each request is counted in the replica's statistics (`procorch status` shows the
gateway's requests and errors like any service's).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

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


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


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


def make_server(app: WSGIApp, sock: socket.socket, settings: GatewaySettings) -> BaseWSGIServer:
    """A waitress server for `app` on the listening socket `sock` (not started)."""
    server = create_server(
        app,
        sockets=[sock],
        threads=settings.threads,
        # waitress refuses a body of max_request_body_size bytes or more; max_body is the
        # largest allowed (as Flask's MAX_CONTENT_LENGTH, the config and the docs say)
        max_request_body_size=settings.max_body + 1,
        connection_limit=1000,  # beyond it, connections wait in the backlog
        asyncore_use_poll=True,  # select() fails past fd 1024
        ident="procorch",
        clear_untrusted_proxy_headers=True,
    )
    server.channel_class = JsonErrorChannel
    return server
