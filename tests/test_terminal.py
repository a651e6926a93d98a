"""What a person at a terminal sees: tables that fit its width, and `status --watch`.

The commands run in a real pseudo-terminal of a given size (as in an 80-column
xterm), and their output is replayed on `Screen`, enough of a VT100 for what Rich
writes, to see what stays on the screen.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable

import pytest

from procorch import terminal
from procorch.render import status_lines
from tests.conftest import PY, SLEEP_FOREVER, Stack, command_service, python_service

STATES = ("running", "starting", "backoff", "stopping", "stopped", "exited", "fatal")


class Terminal:
    """A procorch command in a pseudo-terminal `columns` wide, its output read as it comes."""

    def __init__(self, stack: Stack, *args: str, columns: int, rows: int = 50) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {k: v for k, v in Stack._env().items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.proc = subprocess.Popen(
            [PY, "-m", "procorch", *args],
            cwd=stack.root,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,  # the terminal is its controlling one, as in a shell
        )
        os.close(slave)
        self.master = master
        self.output = b""

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def read_until(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> bool:
        """Read until `predicate(text)` or the end of the output; whether it came true."""
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if select.select([self.master], [], [], left)[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    data = b""
                if not data:
                    return predicate(self.text)
                self.output += data
        return True

    def finish(self, timeout: float = 30.0) -> int:
        """Read everything to the end; the exit code."""
        self.read_until(lambda _: False, timeout)
        os.close(self.master)
        try:
            return self.proc.wait(timeout=5)
        finally:
            self.proc.kill()


def run(stack: Stack, *args: str, columns: int) -> tuple[int, list[str]]:
    terminal = Terminal(stack, *args, columns=columns)
    code = terminal.finish()
    return code, Screen(columns).show(terminal.text)


class Screen:
    """The lines a terminal shows after some output: text, CR, LF, and Rich's CSI codes
    (colours, erase line, cursor up, cursor show/hide)."""

    TOKEN = re.compile(r"\x1b\[([?\d;]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+")

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.lines = [""]
        self.row = self.col = 0

    def show(self, output: str) -> list[str]:
        for token in self.TOKEN.finditer(output):
            text, final = token.group(0), token.group(2)
            if text == "\r":
                self.col = 0
            elif text == "\n":
                self.row += 1
                if self.row == len(self.lines):
                    self.lines.append("")
            elif final == "K":  # erase in line: Rich only erases whole lines
                self.lines[self.row] = ""
            elif final == "A":
                self.row = max(0, self.row - int(token.group(1) or 1))
            elif final is None:
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[: self.col] + text + line[self.col + len(text) :]
                self.col += len(text)
                assert self.col <= self.columns, f"wrote past column {self.columns}: {text!r}"
            # other codes (colours, cursor visibility) change nothing on the lines
        return [line.rstrip() for line in self.lines]


def assert_fits(lines: list[str], columns: int) -> None:
    assert lines, "nothing was drawn"
    too_wide = [line for line in lines if len(line) > columns]
    assert not too_wide, too_wide
    assert "…" not in "\n".join(lines[1:])  # nothing cut in the table (the title may be)


def words(lines: list[str]) -> set[str]:
    return {word for line in lines for word in line.split()}


def header(lines: list[str]) -> list[str]:
    """The table's column names (the line above the rule)."""
    rule = next(i for i, line in enumerate(lines) if line.startswith("──"))
    return lines[rule - 1].replace("cpu %", "cpu%").split()


# == status and services in a real terminal ===========================================


def test_status_fits_80_columns_and_uses_120(stack: Stack) -> None:
    crash = "import sys; print('bye', flush=True); sys.exit(3)"
    stack.write(
        python_service("NotificationService", replicas=2)
        + command_service("sleeper", SLEEP_FOREVER)
        + command_service("crasher", crash, extra='restart = "never"\n'),
    )
    assert stack.cli("up").returncode == 3  # crasher exits at once, and stays exited
    pids = {str(s["pid"]) for s in stack.status()["services"] if s["pid"]}
    assert len(pids) == 3

    code, lines = run(stack, "status", columns=80)
    assert code == 3
    assert_fits(lines, 80)
    assert header(lines)[:4] == ["service", "#", "state", "pid"]
    assert {"heartbeat", "cpu%"}.isdisjoint(header(lines))  # the first to go
    assert pids <= words(lines)  # every pid whole
    assert {"running", "exited", "(exit", "status", "3)"} <= words(lines)  # and every state
    assert any(line.startswith("NotificationService  0  running") for line in lines), lines

    code, lines = run(stack, "status", columns=120)
    assert code == 3
    assert_fits(lines, 120)
    assert header(lines) == [
        "service", "#", "state", "pid", "uptime", "restarts", "cpu%", "memory", "heartbeat",
        "requests",
    ]  # fmt: skip
    assert any("exited (exit status 3)" in line for line in lines), lines  # on the state's line
    assert str(stack.run_dir) in lines[0]  # the whole title


def test_services_fits_80_columns_and_uses_120(stack: Stack) -> None:
    stack.write(python_service("NotificationService", replicas=3) + python_service("api"))
    stack.up()
    pids = {str(s["pid"]) for s in stack.status()["services"]}

    code, lines = run(stack, "services", columns=80)
    assert code == 0
    assert_fits(lines, 80)
    assert header(lines)[:3] == ["service", "kind", "running"]
    assert "address" not in header(lines)  # the socket paths go first
    assert pids <= words(lines) and "3/3" in words(lines)

    code, lines = run(stack, "services", columns=120)
    assert_fits(lines, 120)
    assert header(lines) == ["service", "kind", "running", "pids", "requests", "errors", "address"]
    assert ".procorch/sock/NotificationService.N" in words(lines)  # relative to the stack
    assert pids <= words(lines)


# == the order in which the status table gives way ===================================


def _process(name: str, replica: int, state: str, pid: int | None, **more: object) -> dict:
    alive = pid is not None
    return {
        "name": name,
        "replica": replica,
        "state": state,
        "pid": pid,
        "uptime": 3725.0 if alive else None,
        "restarts": 3,
        "cpu_percent": 1.5 if alive else None,
        "rss_bytes": 123_456_789 if alive else None,
        "heartbeat_age": 0.4 if alive else None,
        "requests": 123_456,
        "errors": 0,
        "last_exit": None,
        **more,
    }


WIDE_STATUS = {
    "supervisor": {"pid": 4_194_303, "uptime": 100_000.0, "run_dir": "/srv/a/long/way/.procorch"},
    "services": [
        _process("NotificationService", 0, "running", 4_194_301, errors=17),
        _process("NotificationService", 11, "backoff", None, last_exit="killed by SIGKILL"),
        _process("api", 0, "fatal", None, last_exit="exit status 1"),
        _process("web", 0, "starting", 4_194_302),
        _process("JobWorker", 1, "stopping", 4_000_000),
    ],
}


def drawn(width: int) -> list[str]:
    out = terminal.Terminal(width, styles=False)
    lines = status_lines(json.loads(json.dumps(WIDE_STATUS)), width)
    return [out.ansi(line).rstrip() for line in lines]


@pytest.mark.parametrize("width", [50, 60, 70, 80, 90, 100, 110, 120, 140])
def test_status_gives_way_in_order_and_keeps_states_and_pids_whole(width: int) -> None:
    lines = drawn(width)
    assert_fits(lines, width)
    assert {"running", "backoff", "fatal", "starting", "stopping"} <= words(lines)
    assert {"4194301", "4194302", "4000000"} <= words(lines)
    assert {"(killed", "SIGKILL)", "(exit", "1)"} <= words(lines)  # reasons shown, maybe wrapped
    shown = header(lines)
    # What a narrower table shows, a wider one shows too; the order is the documented one.
    order = ["heartbeat", "cpu%", "requests", "memory", "restarts", "uptime"]
    gone = [column for column in order if column not in shown]
    assert gone == order[: len(gone)], shown
    assert shown[:4] == ["service", "#", "state", "pid"]
    if width >= 140:
        assert not gone and any("backoff (killed by SIGKILL)" in line for line in lines)


def test_status_in_40_columns_cuts_only_the_names() -> None:
    lines = drawn(40)
    assert max(map(len, lines)) <= 40
    assert header(lines) == ["service", "#", "state", "pid"]
    assert {"running", "backoff", "fatal", "starting", "stopping", "4194301"} <= words(lines)
    assert any(line.startswith("NotificationServ… ") for line in lines), lines


# == status --watch =================================================================


def test_watch_says_daemon_stopped_and_takes_the_stale_table_away(stack: Stack) -> None:
    stack.write(python_service("api"))
    stack.up()
    daemon = stack.daemon_pid()
    watch = Terminal(stack, "status", "--watch", columns=80)
    try:
        assert watch.read_until(lambda text: text.count("running") >= 2)  # redrawn once
        assert stack.cli("down").returncode == 0
        code = watch.finish(timeout=15)
    finally:
        watch.proc.kill()
    assert code == 1
    lines = [line for line in Screen(80).show(watch.text) if line]
    assert lines == [f"procorch: daemon stopped (pid {daemon})"], lines
    assert "Traceback" not in watch.text


def test_watch_until_ctrl_c_leaves_the_table(stack: Stack) -> None:
    stack.write(python_service("api"))
    stack.up()
    watch = Terminal(stack, "status", "--watch", columns=80)
    try:
        assert watch.read_until(lambda text: text.count("running") >= 2)  # redrawn once
        os.killpg(watch.proc.pid, signal.SIGINT)  # Ctrl-C
        code = watch.finish(timeout=15)
    finally:
        watch.proc.kill()
    assert code == 0
    lines = Screen(80).show(watch.text)
    assert any(line.startswith("api  ") and "running" in line for line in lines), lines


def test_watch_gives_up_on_a_daemon_that_stops_answering(stack: Stack) -> None:
    stack.write(python_service("api"))
    stack.up()
    daemon = stack.daemon_pid()
    watch = Terminal(stack, "status", "--watch", columns=80)
    try:
        assert watch.read_until(lambda text: "running" in text)
        os.kill(daemon, signal.SIGSTOP)  # alive, holding its socket, answering nothing
        code = watch.finish(timeout=30)
    finally:
        os.kill(daemon, signal.SIGCONT)
        watch.proc.kill()
    assert code == 1
    lines = [line for line in Screen(80).show(watch.text) if line]
    assert lines == ["procorch: the daemon did not answer in time"], lines
