"""`logs` and `events`: which services a stack runs, one replica, times, --since, following."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from procorch.supervisor.logs import RotatingLog, read_lines, tail_lines
from tests.conftest import (
    SLEEP_FOREVER,
    Stack,
    command_service,
    free_port,
    python_service,
    wait_for,
)
from tests.test_cli import assert_one_line_error

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def iso(t: float) -> str:
    """A time as the log files write it."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def read_until(proc: subprocess.Popen, done, timeout: float = 15.0) -> list[str]:
    """Lines from a follower's stdout until `done(lines)`; the test fails if it never is."""
    lines: list[str] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while not done(lines):
        left = deadline - time.monotonic()
        assert left > 0, f"not done within {timeout}s: {lines[-5:]}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the follower ended: {lines[-5:]}"
            *complete, buffer = (buffer + chunk).split(b"\n")
            lines += [line.decode() for line in complete]
    return lines


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


# == which services ==================================================================


def test_logs_ask_the_running_stack_and_remember_it_after_down(stack: Stack) -> None:
    """`up --gateway` runs a Gateway that no [gateway] table names: logs finds it anyway."""
    stack.write(python_service("api"))
    env = {**os.environ, "GATEWAY_PORT": str(free_port())}
    assert stack.cli("up", "--gateway", env=env).returncode == 0
    serving = "procorch.gateway: serving on"
    wait_for(lambda: serving in stack.cli("logs", "Gateway").stdout)
    assert serving in stack.cli("logs", "gateway").stdout  # names ignore case
    everything = stack.cli("logs").stdout
    assert re.search(rf"^Gateway\.0 +\| .*{serving}", everything, re.M), everything
    assert stack.cli("down").returncode == 0

    after = stack.cli("logs", "Gateway")  # the daemon is gone; its last snapshot is not
    assert after.returncode == 0 and serving in after.stdout
    assert "Gateway.0" in stack.cli("logs").stdout
    assert_one_line_error(stack.cli("logs", "nope"), 1, "no service named 'nope'", "Gateway")


def test_logs_of_one_replica(stack: Stack) -> None:
    code = "import os, time; print('I am', os.environ['PROCORCH_REPLICA'], flush=True); time.sleep(1e6)"  # noqa: E501
    stack.write(command_service("api", code, replicas=3))
    stack.up()
    wait_for(lambda: stack.cli("logs", "api").stdout.count("I am") == 3)
    one = stack.cli("logs", "API.1")
    assert one.returncode == 0
    assert one.stdout == "I am 1\n"  # that replica's alone, so without labels
    assert_one_line_error(stack.cli("logs", "api.3"), 1, "api has no replica 3")


def test_a_service_named_like_a_replica_wins(stack: Stack) -> None:
    stack.write(
        command_service("api", "print('plain api', flush=True); import time; time.sleep(1e6)")
        + command_service('"api.1"', "print('dotted', flush=True); import time; time.sleep(1e6)")
    )
    stack.up()
    wait_for(lambda: "dotted" in stack.cli("logs", "api.1").stdout)
    assert "plain api" not in stack.cli("logs", "api.1").stdout


# == times ============================================================================


def test_timestamps_and_since(stack: Stack) -> None:
    code = (
        "import time\n"
        "for i in range(30): print(f'early {i}', flush=True)\n"
        "time.sleep(2)\n"
        "print('late', flush=True)\n"
        "time.sleep(1e6)\n"
    )
    before = time.time()
    stack.write(command_service("talker", code))
    stack.up()
    wait_for(lambda: "late" in stack.cli("logs", "talker").stdout, timeout=10)
    after = time.time()

    plain = stack.cli("logs", "talker").stdout.splitlines()
    assert len(plain) == 20 and plain[-1] == "late" and plain[0] == "early 11"  # as printed

    stamped = stack.cli("logs", "talker", "-t", "-n", "2").stdout.splitlines()
    assert [line[25:] for line in stamped] == ["early 29", "late"]
    times = [line[:24] for line in stamped]
    assert all(STAMP.fullmatch(t) for t in times), stamped
    assert iso(before) <= times[0] < times[1] <= iso(after)
    early = datetime.fromisoformat(times[0]).timestamp()
    assert datetime.fromisoformat(times[1]).timestamp() - early >= 1.9  # the sleep

    between = early + 1.0
    for since in (iso(between), datetime.fromtimestamp(between).isoformat()):  # UTC, local
        assert stack.cli("logs", "talker", "--since", since).stdout == "late\n", since
    ago = f"{int(time.time() - between)}s"
    assert stack.cli("logs", "talker", "--since", ago).stdout == "late\n"
    everything = stack.cli("logs", "talker", "--since", "1h").stdout.splitlines()
    assert len(everything) == 31  # --since without -n: all of them
    assert stack.cli("logs", "talker", "--since", "1h", "-n", "3").stdout.splitlines() == [
        "early 28",
        "early 29",
        "late",
    ]
    for bad in ("10x", "yesterday", "1h30"):
        assert_one_line_error(stack.cli("logs", "--since", bad), 2, f"--since {bad!r}")


def test_several_replicas_merge_by_time(stack: Stack) -> None:
    code = (
        "import os, time\n"
        "r = int(os.environ['PROCORCH_REPLICA'])\n"
        "time.sleep(0.3 * r)\n"
        "for i in range(3):\n"
        "    print(f'{r}:{i}', flush=True); time.sleep(0.9)\n"
        "time.sleep(1e6)\n"
    )
    stack.write(command_service("tick", code, replicas=3, start_seconds=0.1))
    stack.up()
    wait_for(lambda: stack.cli("logs", "tick").stdout.count(":") >= 9, timeout=10)
    lines = stack.cli("logs", "tick").stdout.splitlines()
    assert [line.split("| ")[1] for line in lines] == [
        f"{r}:{i}" for i in range(3) for r in range(3)
    ]


# == following =========================================================================


def test_follow_prints_whole_lines_with_times(stack: Stack) -> None:
    code = (
        "import time\n"
        "for i in range(1000):\n"
        "    print(f'par', end='', flush=True); time.sleep(0.05)\n"
        "    print(f'tial {i}', flush=True); time.sleep(0.05)\n"
    )
    stack.write(command_service("ticker", code))
    stack.up()
    follower = stack.start("logs", "ticker", "-f", "-t", "-n", "0", stdout=subprocess.PIPE)
    try:
        lines = read_until(follower, lambda lines: len(lines) >= 3)
    finally:
        stop(follower)
    for line in lines:
        stamp, text = line.split(" ", 1)
        assert STAMP.fullmatch(stamp) and re.fullmatch(r"partial \d+", text), line


def test_follow_across_rotations_loses_nothing(stack: Stack) -> None:
    code = (
        "import time\nfor i in range(100000): print(f'line {i:06d}', flush=True); time.sleep(0.01)"
    )
    stack.write(command_service("chatty", code), settings="log_max_bytes = 1024\nlog_backups = 3\n")
    stack.up()
    follower = stack.start("logs", "chatty", "-f", "-n", "5", stdout=subprocess.PIPE)
    try:
        lines = read_until(follower, lambda lines: len(lines) >= 300, timeout=30)
    finally:
        stop(follower)
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no gap, no repeat
    log = stack.run_dir / "logs" / "chatty.0.log"
    assert log.with_name("chatty.0.log.3").exists()  # it did roll over, many times


def test_events_follow(stack: Stack) -> None:
    stack.write(command_service("sleeper", SLEEP_FOREVER))
    stack.up()
    follower = stack.start("events", "-f", "-n", "0", stdout=subprocess.PIPE)
    as_json = stack.start("events", "-f", "-n", "1", "--json", stdout=subprocess.PIPE)
    try:
        time.sleep(0.5)  # both are following
        assert stack.cli("restart", "sleeper").returncode == 0
        text = read_until(follower, lambda lines: any(" running pid" in line for line in lines))
        objects = read_until(as_json, lambda lines: sum('"running"' in line for line in lines) == 2)
    finally:
        stop(follower)
        stop(as_json)
    assert re.search(r"sleeper\.0 +stopping pid", text[0]), text  # only what came after
    events = [json.loads(line) for line in objects]  # one object per line
    assert [e["event"] for e in events] == ["running", "stopping", "stopped", "spawned", "running"]


# == the log files themselves ===========================================================


def test_log_files_stamp_lines_and_roll_over_between_them(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=1024, backups=2)
    log.write(b"hel")
    log.write(b"lo\nwor")  # a line is stamped when it starts, not when it ends
    log.write(b"ld\n")
    text = path.read_text().splitlines()
    assert [line[25:] for line in text] == ["hello", "world"] and STAMP.match(text[0])
    for i in range(200):
        log.write(f"line {i:03d}\n".encode())
    log.write(b"x" * 3000 + b"\n")  # longer than a whole file: split, each piece stamped
    log.write(b"last\n")
    log.close()
    sizes = [path.with_name(name).stat().st_size for name in ("a.log", "a.log.1", "a.log.2")]
    assert all(size <= 1024 for size in sizes), sizes
    assert not path.with_name("a.log.3").exists()
    for name in ("a.log", "a.log.1", "a.log.2"):
        assert all(STAMP.match(line) for line in path.with_name(name).read_text().splitlines())
    assert tail_lines(path, 1) == ["last"]
    assert [text for _, text in read_lines(path)][-1] == "last"  # across the rotated files

    reopened = RotatingLog(path, max_bytes=1024, backups=2)  # a new daemon, same file
    reopened.write(b"again\n")
    reopened.close()
    assert tail_lines(path, 2) == ["last", "again"]


def test_lines_from_before_times_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    path.write_text("written before\nlogs had times\n")
    assert tail_lines(path, 5) == ["written before", "logs had times"]
    assert read_lines(path, since="2000-01-01T00:00:00.000Z") == []  # no time: not "since"
    assert read_lines(path, 1) == [(None, "logs had times")]
