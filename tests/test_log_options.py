"""Log options: reopening for logrotate, stderr apart, times shown, rotation by time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from procorch.supervisor.logs import RotatingLog, period, read_lines
from tests.conftest import SLEEP_FOREVER, Stack, command_service, wait_for
from tests.test_cli import assert_one_line_error
from tests.test_logs import STAMP, read_until, stop

# Prints a numbered line every 20 ms, forever.
TICKER = "import itertools, time\nfor i in itertools.count():\n    print('tick', i, flush=True)\n    time.sleep(0.02)"  # noqa: E501
# Alternates stdout and stderr lines, then sleeps. 0.2 s apart: the daemon reads the two
# pipes in turn, and a stall of a few ms on a loaded machine must not reorder them.
BOTH = (
    "import sys, time\n"
    "for i in range(3):\n"
    "    print('out', i, flush=True); time.sleep(0.2)\n"
    "    print('err', i, file=sys.stderr, flush=True); time.sleep(0.2)\n"
    "time.sleep(1e6)"
)


def ticks(path: Path) -> list[int]:
    return [int(m) for m in re.findall(r"tick (\d+)", path.read_text())] if path.exists() else []


# == reopening ==============================================================================


def test_reopen_after_a_rename_writes_to_a_new_file_at_the_same_path(stack: Stack) -> None:
    stack.write(command_service("api", TICKER, start_seconds=0.1))
    stack.up()
    log = stack.run_dir / "logs" / "api.0.log"
    events = stack.run_dir / "events.log"
    daemon_log = stack.run_dir / "daemon.log"
    wait_for(lambda: len(ticks(log)) > 3)
    for path in (log, events, daemon_log):  # what logrotate's `create` mode does first
        path.rename(path.with_name(path.name + ".rotated"))
    result = stack.cli("logs", "--reopen")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "procorch: reopened 3 log files\n"  # api.0, events, daemon.log
    wait_for(lambda: len(ticks(log)) > 3)  # new output, in a new file at the old path
    old = ticks(log.with_name("api.0.log.rotated"))
    new = ticks(log)
    assert new[0] > old[-1]
    assert set(range(old[0], new[-1] + 1)) <= set(old + new)  # not a line lost in between
    time.sleep(0.1)
    assert ticks(log.with_name("api.0.log.rotated")) == old  # the old file is let go
    assert '"event": "logs-reopened"' in events.read_text()
    assert daemon_log.exists() and (os.stat(daemon_log).st_mode & 0o777) == 0o600
    # `logs` reads the new file (a rotated file not named .1 is logrotate's to keep)
    shown = stack.cli("logs", "-n", "2").stdout
    assert re.fullmatch(r"tick \d+\ntick \d+\n", shown), shown

    # SIGUSR2 to the daemon does the same, as logrotate's postrotate may send it
    log.rename(log.with_name("api.0.log.second"))
    os.kill(stack.daemon_pid(), signal.SIGUSR2)
    wait_for(lambda: len(ticks(log)) > 3)
    assert stack.status()["supervisor"]["state"] == "running"


def test_reopen_without_a_daemon_is_one_line(stack: Stack) -> None:
    stack.write(command_service("api", SLEEP_FOREVER))
    assert_one_line_error(stack.cli("logs", "--reopen"), 1, "procorch is not running")


# == stderr apart ============================================================================


def test_separate_stderr_goes_to_its_own_file_and_logs_shows_both(stack: Stack) -> None:
    stack.write(
        command_service("api", BOTH, start_seconds=0.1, extra='stderr = "separate"\n')
        + command_service("merged", BOTH, start_seconds=0.1)
    )
    stack.up()
    logs = stack.run_dir / "logs"
    wait_for(lambda: "err 2" in (logs / "api.0.err.log").read_text())
    wait_for(lambda: "err 2" in (logs / "merged.0.log").read_text())
    assert [t for _, t in read_lines(logs / "api.0.log")] == ["out 0", "out 1", "out 2"]
    assert [t for _, t in read_lines(logs / "api.0.err.log")] == ["err 0", "err 1", "err 2"]
    assert not (logs / "merged.0.err.log").exists()

    both = stack.cli("logs", "api").stdout.splitlines()
    assert both == [
        "api.0     | out 0",
        "api.0/err | err 0",
        "api.0     | out 1",
        "api.0/err | err 1",
        "api.0     | out 2",
        "api.0/err | err 2",
    ]  # merged by the time each line was written
    assert stack.cli("logs", "api", "--stderr").stdout == "err 0\nerr 1\nerr 2\n"
    assert stack.cli("logs", "api", "--stdout").stdout == "out 0\nout 1\nout 2\n"
    merged = stack.cli("logs", "merged").stdout  # stderr in the one file, as always
    assert merged == "out 0\nerr 0\nout 1\nerr 1\nout 2\nerr 2\n"
    everything = stack.cli("logs").stdout
    assert "api.0/err | err 1" in everything and "merged.0  | err 1" in everything


# == times shown ==================================================================


def test_log_timestamps_show_each_line_with_its_time(stack: Stack) -> None:
    hello = "import time; print('hello', flush=True); time.sleep(1e6)"
    stack.write(
        command_service("api", hello, start_seconds=0.1, extra="log_timestamps = true\n")
        + command_service("plain", hello, start_seconds=0.1)
    )
    stack.up()
    wait_for(lambda: "hello" in stack.cli("logs", "plain").stdout)
    wait_for(lambda: "hello" in stack.cli("logs", "api").stdout)
    assert re.fullmatch(rf"{STAMP.pattern} +hello\n", stack.cli("logs", "api").stdout)
    assert stack.cli("logs", "plain").stdout == "hello\n"  # only where it is asked for
    # the file is as ever: a line gets its time once, not twice
    text = (stack.run_dir / "logs" / "api.0.log").read_text()
    assert re.fullmatch(rf"{STAMP.pattern} hello\n", text), text


def test_log_timestamps_in_the_foreground(stack: Stack) -> None:
    hello = "import time; print('hello', flush=True); time.sleep(1e6)"
    stack.write(
        command_service("api", hello, start_seconds=0.1) + command_service("b", SLEEP_FOREVER),
        settings="log_timestamps = true\n",
    )
    proc = stack.start("up", "--foreground", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        lines = read_until(proc, lambda lines: any("hello" in line for line in lines))
        line = next(line for line in lines if "hello" in line)
        assert re.fullmatch(rf"api\.0 \| {STAMP.pattern} hello", line), line
    finally:
        stop(proc)


# == rotation by time ===========================================================


def test_rotation_by_time_starts_a_new_file_each_hour_or_day(tmp_path: Path) -> None:
    path = tmp_path / "api.0.log"
    path.write_bytes(b"2026-12-01T23:59:59.000Z from yesterday\n")
    two_days_ago = time.time() - 2 * 86400
    os.utime(path, (two_days_ago, two_days_ago))
    log = RotatingLog(path, max_bytes=1 << 20, backups=2, rotate="daily")
    assert log.write(b"today\n") is None
    assert [t for _, t in read_lines(path.with_name("api.0.log.1"))] == ["from yesterday"]
    assert [t for _, t in read_lines(path, start=0)] == ["today"]  # this file alone
    assert log.write(b"still today\n") is None  # the same day: the same file
    assert not path.with_name("api.0.log.2").exists()
    log.close()

    hourly = tmp_path / "h.log"
    hourly.write_bytes(b"2026-12-01T10:00:00.000Z older\n")
    os.utime(hourly, (time.time() - 7200, time.time() - 7200))
    log = RotatingLog(hourly, max_bytes=1 << 20, backups=2, rotate="hourly")
    assert log.write(b"this hour, a line") is None  # one cut short...
    log.close()
    assert hourly.with_name("h.log.1").exists()
    size = RotatingLog(hourly, max_bytes=1 << 20, backups=2)  # by size: never by time
    size.write(b" ends\n")
    size.close()
    assert not hourly.with_name("h.log.2").exists()


def test_the_period_a_time_falls_in() -> None:
    noon = time.mktime((2026, 12, 2, 12, 30, 0, 0, 0, -1))
    assert period(noon, "size") is None
    assert period(noon, "daily") == period(noon + 11 * 3600, "daily")  # 23:30 the same day
    assert period(noon, "daily") != period(noon + 12 * 3600, "daily")  # 00:30 the next
    assert period(noon, "hourly") == period(noon + 29 * 60, "hourly")  # 12:59
    assert period(noon, "hourly") != period(noon + 31 * 60, "hourly")  # 13:01


def test_bad_log_options_are_one_line_errors(stack: Stack) -> None:
    stack.write(command_service("api", SLEEP_FOREVER, extra='stderr = "both"\n'))
    assert_one_line_error(stack.cli("up"), 2, "services.api.stderr", "'separate'")
    stack.write(command_service("api", SLEEP_FOREVER), settings='log_rotate = "weekly"\n')
    assert_one_line_error(stack.cli("up"), 2, "procorch.log_rotate", "'daily'")


def test_up_shows_the_stderr_of_a_failed_service(stack: Stack) -> None:
    crash = "import sys; print('starting'); sys.exit('no database here')"
    stack.write(
        command_service("api", crash, start_seconds=0.5, extra='stderr = "separate"\n'),
        settings="max_restarts = 0\n",
    )
    result = stack.cli("up")
    assert result.returncode == 3
    assert "  | starting\n" in result.stderr
    assert "  ! no database here\n" in result.stderr
