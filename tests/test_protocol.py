"""The message protocol over real sockets: framing, errors, timeouts, concurrency, counters."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procorch.services import protocol
from procorch.services.client import Client
from procorch.services.protocol import MAX_MESSAGE, Invalid, ServiceError
from tests.conftest import Stack, python_service, wait_for


@pytest.fixture
def echo(stack: Stack) -> Iterator[Stack]:
    stack.write(python_service("Echo", "Echo", replicas=2) + python_service("Other", "Echo"))
    stack.up()
    yield stack


@pytest.fixture
def client(echo: Stack) -> Iterator[Client]:
    with Client(echo.run_dir) as c:
        yield c


def raw(stack: Stack, replica: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(stack.run_dir / "sock" / f"Echo.{replica}"))
    sock.settimeout(5)
    return sock


def send_frame(sock: socket.socket, body: bytes) -> None:
    sock.sendall(struct.pack(">I", len(body)) + body)


def read_frame(sock: socket.socket) -> dict | None:
    header = sock.recv(4, socket.MSG_WAITALL)
    if not header:
        return None
    (size,) = struct.unpack(">I", header)
    return json.loads(sock.recv(size, socket.MSG_WAITALL))


def requests_served(stack: Stack, name: str = "Echo") -> tuple[int, int]:
    replicas = stack.replicas(name)
    return sum(r["requests"] for r in replicas), sum(r["errors"] for r in replicas)


# --- the wire ----------------------------------------------------------------------


def test_request_and_reply_shapes(echo: Stack) -> None:
    sock = raw(echo)
    request = protocol.request("r-1", "echo", {"x": 1}, sender="test")
    assert set(request) == {"request_id", "action", "data", "sender", "sent_at"}
    sock.sendall(protocol.frame(request))
    assert read_frame(sock) == {
        "request_id": "r-1",
        "status": "success",
        "data": {"x": 1, "pid": echo.replicas("Echo")[0]["pid"]},
    }
    send_frame(sock, json.dumps({"request_id": 7, "action": "missing", "data": {"id": 3}}).encode())
    assert read_frame(sock) == {
        "request_id": 7,
        "status": "error",
        "code": "not_found",
        "message": "no thing 3",
    }


@pytest.mark.parametrize(
    ("body", "code", "problem"),
    [
        (b"not json", "invalid", "not JSON"),
        (b"\xff\xfe", "invalid", "not JSON"),
        (b"[1, 2]", "invalid", "JSON object"),
        (b'{"action": "echo", "data": {}}', "invalid", "no `request_id`"),
        (b'{"request_id": 1, "data": {}}', "invalid", "no `action`"),
        (b'{"request_id": 1, "action": "echo"}', "invalid", "no `data`"),
        (b'{"request_id": 1, "action": 5, "data": {}}', "invalid", "`action` must be"),
        (b'{"request_id": 1, "action": "echo", "data": [1]}', "invalid", "`data` must be"),
        (b'{"request_id": true, "action": "echo", "data": {}}', "invalid", "`request_id`"),
        (b'{"request_id": 1, "action": "fly", "data": {}}', "unknown_action", "Unknown action"),
        (b'{"request_id": 1, "action": "boom", "data": {}}', "internal", "kaboom"),
        (b'{"request_id": 1, "action": "sleep", "data": {}}', "internal", "KeyError"),
        (b'{"request_id": 1, "action": "unsendable", "data": {}}', "internal", "set"),
    ],
)
def test_bad_requests_get_error_replies_on_a_live_connection(
    echo: Stack, body: bytes, code: str, problem: str
) -> None:
    pid = echo.replicas("Echo")[0]["pid"]
    sock = raw(echo)
    send_frame(sock, body)
    reply = read_frame(sock)
    assert reply is not None and reply["status"] == "error"
    assert reply["code"] == code and problem in reply["message"], reply
    # the same connection still works, and the replica never went down
    send_frame(sock, b'{"request_id": 2, "action": "echo", "data": {"ok": true}}')
    assert read_frame(sock)["data"]["ok"] is True
    assert echo.replicas("Echo")[0]["pid"] == pid


def test_oversized_frame_is_refused_and_the_service_stays_up(echo: Stack, client: Client) -> None:
    pid = echo.replicas("Echo")[0]["pid"]
    sock = raw(echo)
    sock.sendall(struct.pack(">I", MAX_MESSAGE + 1) + b"{")
    reply = read_frame(sock)
    assert reply["code"] == "too_large" and reply["request_id"] is None
    assert read_frame(sock) is None  # that connection is closed: the stream is untrustworthy
    with pytest.raises(Invalid, match="over the"):
        client.call("Echo", "echo", {"big": "x" * MAX_MESSAGE})
    assert client.call("Echo", "echo", {"small": 1})["small"] == 1
    assert echo.replicas("Echo")[0]["pid"] == pid


def test_a_frame_split_across_writes_and_two_frames_in_one(echo: Stack) -> None:
    sock = raw(echo)
    frame = protocol.frame(protocol.request("a", "echo", {"n": 1}, "test"))
    for byte in frame:
        sock.send(bytes([byte]))
    assert read_frame(sock)["request_id"] == "a"
    two = protocol.frame(protocol.request("b", "echo", {}, "t"))
    two += protocol.frame(protocol.request("c", "echo", {}, "t"))
    sock.sendall(two)
    assert [read_frame(sock)["request_id"], read_frame(sock)["request_id"]] == ["b", "c"]


# --- the client --------------------------------------------------------------------------


def test_100_concurrent_callers_each_get_their_own_reply(echo: Stack, client: Client) -> None:
    replies: dict[int, dict] = {}
    errors: list[Exception] = []
    barrier = threading.Barrier(100)

    def caller(i: int) -> None:
        barrier.wait()
        try:
            replies[i] = client.call("Echo", "sleep", {"seconds": 0.05, "tag": i}, timeout=10)
        except Exception as exc:  # collected: a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {i: r["tag"] for i, r in replies.items()} == {i: i for i in range(100)}
    served = [r["requests"] for r in echo.replicas("Echo")]
    assert sum(served) == 100 and min(served) > 0  # spread over both replicas


def test_timeout_and_the_late_reply_reaches_nobody(echo: Stack, client: Client) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceError) as info:
        client.call("Echo", "sleep", {"seconds": 1.0, "tag": "late"}, timeout=0.2)
    assert info.value.code == "timeout"
    assert 0.2 <= time.monotonic() - started < 0.5
    # Every later call, while the late reply is produced and after, gets its own reply.
    deadline = time.monotonic() + 1.5
    n = 0
    while time.monotonic() < deadline:
        assert client.call("Echo", "sleep", {"seconds": 0.01, "tag": n})["tag"] == n
        n += 1
    assert n > 20


def test_request_counters_count_exactly(echo: Stack, client: Client) -> None:
    before, errors_before = requests_served(echo)
    for i in range(37):
        client.call("Echo", "echo", {"i": i})
    for _ in range(5):
        with pytest.raises(ServiceError):
            client.call("Echo", "boom", {})
    after, errors_after = requests_served(echo)
    assert (after - before, errors_after - errors_before) == (42, 5)
    status = echo.cli("status")
    assert "(" in status.stdout and "err)" in status.stdout  # requests and errors shown


def test_notify_is_one_way_and_never_confuses_replies(
    echo: Stack, client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    for i in range(50):
        client.notify("Echo", "record", {"path": str(path), "line": i})
        assert client.call("Echo", "echo", {"i": i})["i"] == i
    wait_for(lambda: path.exists() and len(path.read_text().split()) == 50)
    assert sorted(int(x) for x in path.read_text().split()) == list(range(50))


def test_a_restarted_replica_is_found_again(echo: Stack, client: Client) -> None:
    time.sleep(1.2)  # past the crash-loop window
    pids = {r["pid"] for r in echo.replicas("Echo")}
    assert {client.call("Echo", "echo", {})["pid"] for _ in range(4)} <= pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: all(r["state"] == "running" and r["pid"] not in pids for r in echo.replicas("Echo"))
    )
    assert client.call("Echo", "echo", {})["pid"] not in pids  # same client, no restart


def test_services_call_each_other(echo: Stack, client: Client) -> None:
    relayed = client.call("Echo", "relay", {"service": "Other", "action": "echo", "data": {"a": 1}})
    assert relayed["a"] == 1 and relayed["pid"] == echo.replicas("Other")[0]["pid"]
    assert echo.cli("stop", "Other").returncode == 0
    with pytest.raises(ServiceError) as info:
        client.call("Echo", "relay", {"service": "Other", "action": "echo"})
    assert info.value.code == "unavailable"


def test_command_services_take_no_requests(stack: Stack) -> None:
    from tests.conftest import SLEEP_FOREVER, command_service

    stack.write(command_service("sleeper", SLEEP_FOREVER))
    stack.up()
    with Client(stack.run_dir) as client, pytest.raises(Invalid, match="command service"):
        client.call("sleeper", "anything")


def test_data_that_is_not_json_is_refused_before_sending(client: Client) -> None:
    with pytest.raises(Invalid, match="not JSON"):
        client.call("Echo", "echo", {"when": object()})
