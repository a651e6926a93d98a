"""`listen` sockets held by the daemon and rolling restarts on them: real sockets,
real HTTP, a real sd_listen_fds server (tests/fixtures/sdhttp.py)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from procorch.supervisor import sockets
from tests.conftest import FIXTURES, PY, Stack, free_port, wait_for

SDHTTP = [PY, str(FIXTURES / "sdhttp.py")]
# gunicorn takes the sockets from LISTEN_FDS itself; TERM is its graceful stop
GUNICORN = [str(Path(PY).parent / "gunicorn"), "--chdir", str(FIXTURES), "-w", "1", "wsgi_app:app"]


def web(port: int, replicas: int = 2, server: list[str] = SDHTTP) -> str:
    return f"""
[services.web]
command = {json.dumps(server)}
replicas = {replicas}
start_seconds = 0.3
listen = ["tcp://127.0.0.1:{port}", "unix://web.sock"]
"""


def get(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


def test_replicas_serve_the_held_sockets_the_systemd_way(stack: Stack) -> None:
    port = free_port()
    stack.write(web(port))
    stack.up()
    pids = {s["pid"] for s in stack.replicas("web")}
    status, body = get(port)
    pid, names = body.split()
    assert status == 200 and int(pid) in pids  # LISTEN_PID matched the server's own pid
    assert names == "web:web"
    path = stack.root / "web.sock"  # relative to the config's directory
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with socket.socket(socket.AF_UNIX) as unix:
        unix.connect(str(path))
        unix.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert unix.makefile("rb").readline().startswith(b"HTTP/1.1 200")
    stack.cli("down")
    assert not path.exists()
    with pytest.raises(ConnectionRefusedError):
        get(port)


def test_a_port_in_use_fails_up_in_one_line(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack.write(web(port))
        result = stack.cli("up")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "listen" in result.stderr and "Traceback" not in result.stderr
    assert not stack.leftovers()


def test_handoff_moves_the_sockets_to_3_and_on_without_bash_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = [sockets.bind_address("tcp://127.0.0.1:0") for _ in range(2)]
    fds = tuple(s.fileno() for s in held)
    assert all(fd >= sockets.HELD_FDS_FROM for fd in fds)
    show = ["/bin/sh", "-c", 'echo "$LISTEN_PID $$"; readlink /proc/$$/fd/3 /proc/$$/fd/4']
    try:
        for bash in (sockets._BASH, None):
            monkeypatch.setattr(sockets, "_BASH", bash)
            out = subprocess.run(
                sockets.handoff_argv(fds, show), pass_fds=fds, capture_output=True, text=True
            ).stdout.split()
            assert out[0] == out[1]  # LISTEN_PID is the program's own pid
            inodes = [f"socket:[{os.fstat(fd).st_ino}]" for fd in fds]
            assert out[2:] == inodes
    finally:
        for s in held:
            s.close()


@pytest.mark.parametrize("server", [SDHTTP, GUNICORN], ids=["sdhttp", "gunicorn"])
def test_rolling_restart_under_load_loses_nothing(stack: Stack, server: list[str]) -> None:
    port = free_port()
    stack.write(web(port, server=server))
    stack.up()
    before = {s["pid"] for s in stack.replicas("web")}
    stop = threading.Event()
    answers: list[int] = []
    failures: list[str] = []

    def load() -> None:
        while not stop.is_set():
            try:
                status, _ = get(port)
                answers.append(status)
            except OSError as exc:  # refused, reset, timed out: all count
                failures.append(repr(exc))

    client = threading.Thread(target=load)
    client.start()
    try:
        wait_for(lambda: len(answers) > 20)
        result = stack.cli("restart", "--rolling", "web")
        count = len(answers)
        wait_for(lambda: len(answers) > count + 20)
    finally:
        stop.set()
        client.join()
    assert result.returncode == 0, result.stderr
    after = {s["pid"] for s in stack.replicas("web")}
    assert len(after) == 2 and after.isdisjoint(before)
    assert failures == [] and set(answers) == {200}


def test_a_failing_replacement_aborts_the_rollout_and_keeps_the_old_replicas(
    stack: Stack,
) -> None:
    port = free_port()
    stack.write(web(port))
    stack.up()
    before = {s["pid"] for s in stack.replicas("web")}
    broken = Path(stack.root / "broken.py")
    broken.write_text("raise SystemExit('no good')\n")
    stack.write(web(port).replace(str(FIXTURES / "sdhttp.py"), str(broken)))
    result = stack.cli("reload")
    assert result.returncode == 1
    assert "rollout aborted, old replicas kept" in result.stderr
    assert {s["pid"] for s in stack.replicas("web")} == before
    assert get(port)[0] == 200
    # what runs is still the old command: the next reload tries the replacement again
    assert "changed: web (command; rolling)" in stack.cli("reload", "--dry-run").stdout


def _two_free_ports() -> int:
    """A port that is free, and the next one too (base_port for two replicas)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row")


def test_rolling_restart_of_replicas_binding_their_own_port_stops_each_first(
    stack: Stack,
) -> None:
    # a replacement keeps its replica's number, so its {port}: started beside the old
    # one it could not bind it; each is stopped first, the other keeps answering
    port = _two_free_ports()
    server = [PY, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    stack.write(
        f"[services.web]\ncommand = {json.dumps(server)}\nreplicas = 2\n"
        f"start_seconds = 0.3\nbase_port = {port}\n"
    )
    stack.up()
    before = {s["pid"] for s in stack.replicas("web")}
    result = stack.cli("restart", "--rolling", "web")
    assert result.returncode == 0, result.stderr
    after = stack.replicas("web")
    assert {s["state"] for s in after} == {"running"}
    assert {s["pid"] for s in after}.isdisjoint(before)
    assert get(port)[0] == get(port + 1)[0] == 200
