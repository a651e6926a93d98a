"""The gateway's waitress server in-process: how an answer is written to a connection."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from procorch.config import GatewaySettings
from procorch.gateway.server import DeadlineChannel, GatewayServer, make_server

BODY = b'{"status": "ok"}'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/stream":  # no Content-Length: chunked, in pieces
        start_response("200 OK", [("Content-Type", "application/json")])
        return iter([b"[1,", b"2]"])
    length = ("Content-Length", str(len(BODY)))
    start_response("200 OK", [("Content-Type", "application/json"), length])
    return [BODY]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[bytes]]]:
    """A server on a port of its own, and the writes handed to its connections."""
    writes: list[bytes] = []
    original = DeadlineChannel.write_soon

    def write_soon(self: DeadlineChannel, data: bytes) -> int:
        writes.append(bytes(data))
        return original(self, data)

    monkeypatch.setattr(DeadlineChannel, "write_soon", write_soon)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server: GatewayServer = make_server(app, sock, GatewaySettings(threads=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], writes
    finally:
        server.stop(1.0)
        server.close()
        sock.close()


def ask(port: int, method: str, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer


def test_an_answer_of_known_length_is_one_write(served: tuple[int, list[bytes]]) -> None:
    port, writes = served
    answer = ask(port, "GET", "/")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == BODY
    assert f"Content-Length: {len(BODY)}".encode() in head
    assert writes == [answer]  # the head and the body together: one send(), one packet


def test_a_streamed_answer_is_still_chunked(served: tuple[int, list[bytes]]) -> None:
    port, writes = served
    head, _, body = ask(port, "GET", "/stream").partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"
    assert len(writes) > 1
