"""The tables are written without Rich (`procorch.terminal`), byte for byte as Rich wrote them.

Rich is the oracle here: the same lines go through `Console.print` and through
`Terminal.write`, on a real pseudo-terminal or a pipe, under the environment variables
that change what Rich does (TERM, NO_COLOR, FORCE_COLOR, TTY_COMPATIBLE, COLUMNS).
"""

from __future__ import annotations

import io
import os
import pty
import select

import pytest
from rich.console import Console

from procorch.render import status_lines, status_view
from procorch.terminal import Styled, Terminal, cell_len
from tests.test_terminal import WIDE_STATUS

ENVIRONMENTS = [
    {"TERM": "xterm-256color", "COLUMNS": "100"},
    {"TERM": "xterm", "COLORTERM": "truecolor", "COLUMNS": "60"},
    {"TERM": "xterm-256color", "NO_COLOR": "1", "COLUMNS": "120"},
    {"TERM": "dumb", "COLUMNS": "100"},
    {"TERM": "xterm-256color", "TTY_COMPATIBLE": "0", "COLUMNS": "90"},
    {"TERM": "xterm-256color", "FORCE_COLOR": "", "COLUMNS": "90"},
    {"TERM": "xterm-256color", "COLUMNS": "40"},
]
PIPED_ENVIRONMENTS = [{}, {"FORCE_COLOR": "1", "COLUMNS": "70"}, {"TTY_COMPATIBLE": "1"}]


def _read_all(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def _rich(stream: io.TextIOBase, env: dict[str, str]) -> None:
    """What procorch wrote with Rich: its console, 250 wide when not on a terminal."""
    options = {"highlight": False, "markup": False, "emoji": False, "_environ": env}
    console = Console(file=stream, **options)
    if not console.is_terminal:
        console = Console(file=stream, width=250, **options)
    console.print(status_view(WIDE_STATUS, console.width))


def _light(stream: io.TextIOBase, env: dict[str, str]) -> None:
    out = Terminal.detect(stream, env)
    out.write(status_lines(WIDE_STATUS, out.width), stream)


def _name(env: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in env.items()) or "bare"


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=_name)
def test_on_a_terminal_the_bytes_are_richs(env: dict[str, str]) -> None:
    written = []
    for write in (_rich, _light):
        master, slave = pty.openpty()
        with open(slave, "w", encoding="utf-8", closefd=True) as stream:
            write(stream, env)
            stream.flush()
            written.append(_read_all(master))
        os.close(master)
    rich, light = written
    assert light == rich
    assert b"running" in light


@pytest.mark.parametrize("env", PIPED_ENVIRONMENTS, ids=_name)
def test_piped_the_bytes_are_richs(env: dict[str, str]) -> None:
    rich, light = io.StringIO(), io.StringIO()
    _rich(rich, env)
    _light(light, env)
    assert light.getvalue() == rich.getvalue()


def test_styles_follow_the_terminal_rules() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    line = Styled("ok", "bold green")
    assert Terminal.detect(Tty(), {"TERM": "xterm"}).ansi(line) == "\x1b[1;32mok\x1b[0m"
    assert Terminal.detect(Tty(), {"NO_COLOR": "1"}).ansi(line) == "\x1b[1mok\x1b[0m"
    assert Terminal.detect(Tty(), {"TERM": "dumb"}).ansi(line) == "ok"
    assert Terminal.detect(io.StringIO(), {}).ansi(line) == "ok"
    assert Terminal.detect(io.StringIO(), {}).width == 250
    assert Terminal.detect(Tty(), {"COLUMNS": "73"}).width == 73


def test_wrapping_breaks_at_spaces_and_folds_long_words() -> None:
    line = Styled("exited", "bold").append(" (killed by SIGKILL)", "dim")
    parts = line.wrapped(8)
    assert [p.plain for p in parts] == ["exited", "(killed", "by", "SIGKILL)"]
    assert parts[0].runs == [("exited", "bold")] and parts[1].runs == [("(killed", "dim")]
    assert [p.plain for p in Styled("abcdefghij").wrapped(4)] == ["abcd", "efgh", "ij"]
    assert all(p.width <= 5 for p in Styled("a bb ccc dddd eeeee ffffff").wrapped(5))


def test_cutting_counts_cells_not_characters() -> None:
    assert cell_len("名前") == 4 and cell_len("abc") == 3
    assert Styled("NotificationService").truncated(10).plain == "Notificat…"
    assert Styled("サービス名前").truncated(5).plain == "サー…"
    assert Styled("short").truncated(10).plain == "short"
