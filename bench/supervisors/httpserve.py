"""The HTTP service of the rolling-restart benchmark: every GET gets 200 and the server's pid.

    python httpserve.py MARKER [--port P | --fd N]

MARKER is ignored (the harness finds the processes by it). The listening socket comes, in
this order, from the systemd convention (LISTEN_FDS with LISTEN_PID = this pid: fd 3, how
procorch hands over the socket of `listen = [...]`), from `--fd N` (circus'
`$(circus.sockets.NAME)`), or from `--port P`, bound here with SO_REUSEPORT so that several
copies share the port (supervisord holds no sockets for its programs). On SIGTERM it stops
accepting, finishes the requests in hand and exits, as production servers (gunicorn,
uvicorn) do: a connection waiting in a socket the server shares with another copy is left
for that copy.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

SD_LISTEN_FDS_START = 3
BACKLOG = 128
POLL_INTERVAL = 0.05  # s: how soon serve_forever notices a shutdown request


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = f"{os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one line per request would cost more than the request


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the requests in hand

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        # Non-blocking: when copies share one socket, all of them wake for a connection
        # and only one gets it; a blocking accept() would hang the others, deaf to SIGTERM.
        sock.setblocking(False)
        self.socket = sock

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = self.socket.accept()
        conn.setblocking(True)
        return conn, addr


def listening_socket(port: int | None, fd: int | None) -> socket.socket:
    """The socket to serve: inherited (LISTEN_FDS, then --fd) or bound here (--port)."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", 0)):
        return socket.socket(fileno=SD_LISTEN_FDS_START)
    if fd is not None:
        return socket.socket(fileno=fd)
    if port is None:
        raise SystemExit("httpserve: no socket: LISTEN_FDS, --fd or --port needed")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(BACKLOG)
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("marker")
    parser.add_argument("--port", type=int)
    parser.add_argument("--fd", type=int)
    args = parser.parse_args(argv)
    server = Server(listening_socket(args.port, args.fd))

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return: not from its own thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever(poll_interval=POLL_INTERVAL)
    server.server_close()


if __name__ == "__main__":
    main()
