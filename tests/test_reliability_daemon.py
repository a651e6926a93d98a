"""The daemon under trouble (issue 10): it gives up on crash loops only, and not forever;
a corrupt state.json or an odd control request gets one clear answer.

Real stacks driven through the real CLI, real processes and real signals.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from procorch.services.protocol import Unavailable
from procorch.services.registry import Registry
from procorch.supervisor.rundir import BadState, RunDir
from tests.conftest import (
    SLEEP_FOREVER,
    Stack,
    command_service,
    jobs_table,
    python_service,
    wait_for,
)


def events_of(stack: Stack, service: str, kind: str) -> list[dict]:
    return [e for e in stack.events() if e.get("service") == service and e["event"] == kind]


# --- giving up: only on crash loops, and not forever ---------------------------------


def test_long_running_service_killed_eight_times_is_never_fatal(stack: Stack) -> None:
    stack.write(command_service("sleeper", SLEEP_FOREVER, start_seconds=0.1))  # max_restarts 5
    stack.up()
    for kills in range(1, 9):
        time.sleep(1.2)  # it has been running over a second: a crash, not a crash loop
        (before,) = stack.replicas("sleeper")
        assert before["state"] == "running"
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(
            lambda n=kills: (
                stack.replicas("sleeper")[0]["restarts"] == n
                and stack.replicas("sleeper")[0]["state"] == "running"
            ),
            timeout=5,
        )
    assert not events_of(stack, "sleeper", "fatal")
    assert len(events_of(stack, "sleeper", "exited")) == 8


def test_crash_loop_goes_fatal_then_is_retried_after_fatal_retry(stack: Stack) -> None:
    crash = "import sys; sys.exit(3)"
    stack.write(
        command_service("looper", crash, extra="fatal_retry = 1.5\n")  # its own cool-off
        + command_service("stuck", crash),  # the global one: never
        settings="max_restarts = 2\nfatal_retry = 0\n",
    )
    up = stack.cli("up")
    assert up.returncode == 3, up.stdout + up.stderr
    fatal = events_of(stack, "looper", "fatal")
    assert len(fatal) == 1 and "3 crashes within 60s" in fatal[0]["detail"]
    assert len(events_of(stack, "looper", "spawned")) == 3  # the start and 2 restarts
    assert not events_of(stack, "looper", "fatal-retry")  # not before its cool-off

    wait_for(lambda: events_of(stack, "looper", "fatal-retry"), timeout=5)
    wait_for(lambda: len(events_of(stack, "looper", "fatal")) == 2, timeout=5)
    (retry,) = events_of(stack, "looper", "fatal-retry")[:1]
    assert retry["detail"].startswith("after 1.")
    kinds = [e["event"] for e in stack.events() if e.get("service") == "looper"]
    first = kinds.index("fatal-retry")
    again = kinds.index("fatal", first)
    assert kinds[first + 1] == "spawned"  # a fresh set of 3 tries, then FATAL again
    assert kinds[first:again].count("spawned") == 3
    # fatal_retry = 0 (the global setting here): it stays FATAL
    assert len(events_of(stack, "stuck", "fatal")) == 1
    assert not events_of(stack, "stuck", "fatal-retry")
    assert stack.replicas("stuck")[0]["state"] == "fatal"


# --- bad input: a corrupt state.json, odd control requests --------------------------

BAD_STATES = {
    "not JSON": "garbage{",
    "truncated": '{"token": "0123", "processes": [{"serv',
    "a list": "[1, 2]",
    "wrong shape": '{"token": "0123", "processes": [1]}',
    "wrong type": '{"token": "0123", "processes": [{"service": "api", "replica": "0"}]}',
    "nested too deep": "[" * 100_000,
}


@pytest.mark.parametrize("content", BAD_STATES.values(), ids=BAD_STATES.keys())
def test_corrupt_state_file_fails_a_reader_in_one_line(stack: Stack, content: str) -> None:
    stack.write(python_service("api", "Echo"))
    stack.run_dir.mkdir(mode=0o700)
    (stack.run_dir / "state.json").write_text(content)  # no daemon: nothing rewrites it
    result = stack.cli("call", "api", "echo")
    assert result.returncode == 1
    assert result.stderr.startswith("procorch: api.echo: unavailable: the registry is unreadable")
    assert "corrupt" in result.stderr or "cannot read" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    with pytest.raises(Unavailable, match="state.json is corrupt"):
        Registry(stack.run_dir).services()


def test_daemon_rewrites_a_corrupt_state_file_at_its_next_check(stack: Stack) -> None:
    stack.write(python_service("api", "Echo"))  # check_interval = 0.2
    stack.up()
    state = stack.run_dir / "state.json"
    for content in ("garbage{", '{"token": "0123", "processes": [1]}', None):
        if content is None:
            state.unlink()
        else:
            state.write_text(content)
        wait_for(lambda: _readable(state), timeout=3)
        assert stack.cli("call", "api", "echo").returncode == 0
    assert len([e for e in stack.events() if e["event"] == "state-rewritten"]) == 3


def _readable(path: Path) -> bool:
    try:
        return RunDir(path.parent).read_state() is not None
    except BadState:
        return False


def _control(stack: Stack, payload: bytes, replies: int) -> list[dict]:
    """Send raw bytes on the control socket in one write; read `replies` JSON lines."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(str(stack.run_dir / "control.sock"))
        sock.sendall(payload)
        reader = sock.makefile("rb")
        return [json.loads(reader.readline()) for _ in range(replies)]


def test_control_socket_answers_deep_nesting_and_every_request_of_a_packet(
    stack: Stack,
) -> None:
    stack.write(command_service("sleeper", SLEEP_FOREVER, start_seconds=0.1))
    stack.up()
    (deep,) = _control(stack, b"[" * 60_000 + b"\n", 1)
    assert deep == {"ok": False, "error": "bad request: nested too deeply"}
    (deep,) = _control(stack, b'{"cmd": "status", "names": ' + b"[" * 60_000 + b"\n", 1)
    assert deep["ok"] is False
    both = _control(stack, b'{"cmd": "status"}\n{"cmd": "config"}\n', 2)
    assert both[0]["ok"] and both[0]["services"][0]["name"] == "sleeper"
    assert both[1]["ok"] and "config" in both[1]
    errors = _control(stack, b'{"cmd": "nope"}\n[1]\n{"cmd": "status"}\n', 3)
    assert errors[0] == {"ok": False, "error": "unknown command 'nope'"}
    assert errors[1] == {"ok": False, "error": "bad request: not an object"}
    assert errors[2]["ok"] is True
    assert stack.cli("status").returncode == 0  # the daemon is none the worse


# --- a full disk ------------------------------------------------------------------------

# ~80 KB/s: output to drop while the disk is full, yet minutes to fill 4 MiB again after
CHATTY = "import time\nwhile True:\n    print('x' * 4000, flush=True)\n    time.sleep(0.05)"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose run directory is on a real 4 MiB tmpfs (unmounted after `down`)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    stack = Stack(tmp_path)
    stack.run_dir = disk / "run"
    try:
        yield stack
    finally:
        stack.cleanup()
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(path: Path) -> int:
    """Write zeros to `path` until the disk says ENOSPC; how many bytes it took."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(b"\0" * 65536) or 0
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return written


def test_full_disk_keeps_the_daemon_and_services_alive(small_disk: Stack) -> None:
    stack = small_disk
    stack.write(
        command_service("chatty", CHATTY, start_seconds=0.1)
        + command_service("sleeper", SLEEP_FOREVER, start_seconds=0.1)
        + python_service("api"),
        # no rotation: a rotated-out backup would free room for the log on a full disk
        settings=f'run_dir = "{stack.run_dir}"\n',
    )
    stack.up()
    daemon = stack.daemon_pid()
    assert daemon
    chatty = stack.pid_of("chatty")
    time.sleep(1.2)  # past the crash-loop window: a kill is restarted at once
    fill(stack.run_dir.parent / "filler")

    def warned() -> list[str]:
        return stack.status()["supervisor"]["warnings"]

    # The daemon notices at its next write (chatty's log): only then do the kills come,
    # so their events are all of the meantime, whichever write fails first.
    wait_for(warned, timeout=5)
    for name in ("sleeper", "api"):  # restarts need no disk
        old = stack.pid_of(name)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda n=name, o=old: stack.restarted(n, o), timeout=5)
    time.sleep(1.5)  # the daemon has tried its snapshot again, at least once
    assert alive(daemon) and stack.daemon_pid() == daemon
    assert all(s["state"] == "running" for s in stack.status()["services"])

    (warning,) = wait_for(warned, timeout=5)
    assert warning.startswith("disk full: cannot write ") and " since " in warning
    shown = stack.cli("status")
    assert shown.returncode == 0
    assert f"procorch: warning: {warning.split(' since ')[0]}" in shown.stderr

    # the chatty service was never blocked on its pipe: its output is read and dropped
    assert stack.pid_of("chatty") == chatty
    dropped = _dropped(warned())
    assert dropped > 0
    wait_for(lambda: _dropped(warned()) > dropped, timeout=5)
    state = json.loads((stack.run_dir / "state.json").read_text())
    assert {p["service"]: p["pid"] for p in state["processes"]}["sleeper"] != stack.pid_of(
        "sleeper"
    )  # the snapshot is stale while the disk is full

    (stack.run_dir.parent / "filler").unlink()
    wait_for(lambda: not warned(), timeout=5)
    kinds = [e["event"] for e in stack.events()]
    assert kinds.count("disk-full") == 1 and kinds.count("disk-ok") == 1
    # the events of the meantime were kept and written, in order
    during = kinds[kinds.index("disk-full") : kinds.index("disk-ok")]
    assert during.count("exited") == 2 and during.count("spawned") == 2
    ok = [e for e in stack.events() if e["event"] == "disk-ok"][0]
    assert "dropped" in ok["detail"]

    def snapshot_current() -> bool:
        state = json.loads((stack.run_dir / "state.json").read_text())
        pids = {p["service"]: p["pid"] for p in state["processes"]}
        return pids["sleeper"] == stack.pid_of("sleeper") and pids["api"] == stack.pid_of("api")

    wait_for(snapshot_current, timeout=3)
    assert alive(daemon) and stack.daemon_pid() == daemon
    assert stack.status()["supervisor"]["warnings"] == []
    own_log = (stack.run_dir / "daemon.log").read_text()
    assert "disk-ok" in own_log and "Traceback" not in own_log


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _dropped(warnings: list[str]) -> float:
    """The bytes of output a disk-full warning says were dropped."""
    found = re.search(r"\(([\d.]+) (B|KiB|MiB) of service output dropped\)", warnings[0])
    assert found, warnings
    return float(found[1]) * {"B": 1, "KiB": 1024, "MiB": 1024**2}[found[2]]


# --- owner-only files ---------------------------------------------------------------------


def test_everything_in_the_run_directory_is_owner_only(stack: Stack) -> None:
    old_umask = os.umask(0o022)  # what a shell usually has: group and others may read
    made = stack.root / "made-by-a-command"
    try:
        stack.write(
            "\n[services.users]\nmodule = 'procorch.services.users:UserService'\n"
            + python_service("broken", "NoDatabase")  # leaves a note in exits/
            # a command's own files follow the umask procorch was started with
            + command_service("printer", f"open({str(made)!r}, 'w').close(); " + SLEEP_FOREVER)
            + jobs_table(delay=1.0),
            settings="log_max_bytes = 1024\n",
        )
        stack.cli("up")  # exit 3: `broken` is FATAL
        created = stack.cli(
            "call", "users", "create_user", '{"username": "ann", "email": "ann@x.org"}'
        )
        assert created.returncode == 0, created.stderr
        waiting = stack.start(  # the CLI binds a socket in done/ while it waits
            "job", "submit", "10", "--wait", stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            (bound,) = wait_for(lambda: list((stack.run_dir / "done").glob("*")), timeout=5)
            cli_socket = stat.S_IMODE(bound.lstat().st_mode)
        finally:
            assert waiting.wait(timeout=30) == 0
    finally:
        os.umask(old_umask)
    modes = {
        str(path.relative_to(stack.run_dir)): stat.S_IMODE(path.lstat().st_mode)
        for path in [stack.run_dir, *stack.run_dir.rglob("*")]
    }
    for expected in (
        ".", "daemon.lock", "procorch.pid", "control.sock", "state.json", "config.json",
        "stats.bin", "events.log", "daemon.log", "logs", "logs/printer.0.log", "exits",
        "exits/broken.0", "sock", "sock/users.0", "data", "data/users.db",
        "data/users.db-wal", "data/users.db-shm", "jobs.db", "jobs.db-wal", "jobs.db-shm",
        "wake", "done",
    ):  # fmt: skip
        assert expected in modes, sorted(modes)
    assert any(name.startswith("wake/") for name in modes)  # the workers'
    modes["done/(the CLI's socket)"] = cli_socket
    loose = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (stack.run_dir / name).is_dir() else 0o600)
    }
    assert not loose, loose
    assert stat.S_IMODE(made.stat().st_mode) == 0o644


def test_up_on_a_full_disk_fails_in_one_line(small_disk: Stack) -> None:
    stack = small_disk
    stack.write(
        command_service("sleeper", SLEEP_FOREVER), settings=f'run_dir = "{stack.run_dir}"\n'
    )
    fill(stack.run_dir.parent / "filler")
    result = stack.cli("up")
    assert result.returncode == 1
    assert result.stderr == f"procorch: {stack.run_dir}: disk full\n"
    (stack.run_dir.parent / "filler").unlink()
    stack.up()  # and once there is room, it starts
