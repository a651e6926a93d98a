"""How the CLI shows things to people: the Rich status and services tables, human units.

Imported only by commands that draw, so Rich's import cost stays off the paths
that print JSON.

The tables fit the terminal. Every column is measured first; when the rows are wider
than the terminal, the least useful columns go or narrow in a fixed order (`fit`), so
Rich never has to cut a pid to `2…` or a state to `runn…`. With more width, more shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod, OverflowMethod, RenderableType
from rich.text import Text

from procorch.sizes import format_size

STATE_STYLES = {
    "running": "bold green",
    "starting": "yellow",
    "backoff": "bold yellow",
    "stopping": "yellow",
    "stopped": "dim",
    "exited": "magenta",
    "fatal": "bold red",
}
FAILED = ("exited", "fatal", "backoff")  # the states whose last exit says why
GAP = 2  # blank cells between two columns
NAME_MIN = 8  # a service name is cut (with …) to no shorter than this, as a last resort


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def size(n: int | None) -> str:
    return "-" if n is None else format_size(n)


# == fitting a table to the width ======================================================


@dataclass
class Column:
    """A column's header and cells, and how far it may narrow (if at all)."""

    header: str
    cells: list[Text]
    justify: JustifyMethod = "left"
    shrink_to: int | None = None  # the narrowest it may become; None: always whole
    overflow: OverflowMethod = "fold"  # how a cell gives way once the column is narrowed
    taller: list[Text] | None = None  # the same cells on more lines, to use when narrower
    natural: int = field(init=False)  # the width that shows every cell whole
    width: int = field(init=False)

    def __post_init__(self) -> None:
        self._measure()

    def _measure(self) -> None:
        lines = [line for cell in self.cells for line in cell.plain.split("\n")]
        self.natural = self.width = max(cell_len(line) for line in [self.header, *lines])

    def make_taller(self) -> None:
        """Use the `taller` cells from now on (they say the same on more lines)."""
        if self.taller is not None:
            self.cells, self.taller = self.taller, None
            self._measure()

    @property
    def slack(self) -> int:
        """How much narrower it may still become."""
        if self.shrink_to is None:
            return 0
        return max(0, self.width - max(self.shrink_to, cell_len(self.header)))

    @property
    def narrowed(self) -> bool:
        return self.width < self.natural


def table_width(columns: Sequence[Column]) -> int:
    return sum(c.width for c in columns) + GAP * max(0, len(columns) - 1)


def fit(columns: list[Column], width: int, steps: Sequence[tuple[str, str]]) -> list[Column]:
    """The columns to show in `width` cells, and their widths.

    `steps` are taken in order until the table fits: ("drop", header) removes a column,
    ("taller", header) puts its cells on more lines (`Column.taller`), ("shrink", header)
    lets it narrow, down to its `shrink_to`, as far as needed. A column no step names
    is always shown whole. If the last step is not enough, the table is as narrow as
    the steps allow (and the terminal wraps it).
    """
    shown = list(columns)
    by_header = {c.header: c for c in columns}
    shrinkable: list[Column] = []
    for action, header in (("", ""), *steps):
        if action == "drop":
            shown.remove(by_header[header])
        elif action == "taller":
            by_header[header].make_taller()
        elif action == "shrink":
            shrinkable.append(by_header[header])
        excess = table_width(shown) - width
        if excess <= sum(c.slack for c in shrinkable if c in shown):
            break
    for column in shrinkable:  # narrowest first where the steps said so first
        if excess <= 0:
            break
        if column in shown:
            give = min(excess, column.slack)
            column.width -= give
            excess -= give
    return shown


def draw(columns: Sequence[Column]) -> Text:
    """The table: a bold header, a rule, then the rows; each column as wide as `fit` chose,
    GAP cells apart. Drawn here rather than by Rich's Table, which measures every cell
    again (a third of the time `status` spends drawing)."""
    lines = [
        _line(columns, [[Text(c.header, style="bold")] for c in columns]),
        Text("─" * table_width(columns)),
    ]
    for cells in zip(*(c.cells for c in columns), strict=True):
        blocks = [_cell_lines(c, cell) for c, cell in zip(columns, cells, strict=True)]
        for i in range(max(len(block) for block in blocks)):
            lines.append(_line(columns, [block[i : i + 1] for block in blocks]))
    # Fitted already: anything wider (only where the steps could not help) is left to the
    # terminal to wrap, as Rich's own wrapping would.
    return Text("\n", no_wrap=True, overflow="ignore").join(lines)


def _line(columns: Sequence[Column], pieces: list[list[Text]]) -> Text:
    """One line of the table, from each column's piece of it (none: blank)."""
    line = Text()
    for i, (column, piece) in enumerate(zip(columns, pieces, strict=True)):
        text = piece[0] if piece else Text()
        space = " " * (column.width - text.cell_len)
        if i:
            line.append(" " * GAP)
        if column.justify == "right":
            line.append(space)
            line.append_text(text)
        else:
            line.append_text(text)
            line.append(space)
    line.rstrip()
    return line


def _cell_lines(column: Column, cell: Text) -> list[Text]:
    """A cell's lines in its column: whole, or given way as the column allows."""
    if not column.narrowed:
        return list(cell.split("\n"))
    if column.overflow == "ellipsis":
        lines = [line.copy() for line in cell.split("\n")]
        for line in lines:
            line.truncate(column.width, overflow="ellipsis")
        return lines
    # Wrapped at spaces, a word longer than the column folded; the console only measures.
    return list(cell.wrap(Console(width=column.width), column.width, overflow="fold"))


def _texts(values: list[str]) -> list[Text]:
    return [Text(v) for v in values]


def _home(path: str) -> str:
    """A path with the home directory written as ~."""
    home = os.path.expanduser("~")
    if home not in ("", "/") and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :]
    return path


def _near(path: str) -> str:
    """A path as short as it can honestly be: relative to here if it is below here."""
    here = os.getcwd()
    if path.startswith(here + os.sep):
        return path[len(here) + 1 :]
    return _home(path)


# == the status table =================================================================

# The order in which the status table gives way in a narrow terminal: the reason a
# process ended moves below its state (nothing lost), the columns that matter least
# go, a long reason wraps, more columns go, and only then are the longest service
# names cut. Service, replica, state and pid are always there, and states always whole.
STATUS_STEPS = (
    ("taller", "state"),
    ("drop", "heartbeat"),
    ("drop", "cpu %"),
    ("drop", "requests"),
    ("shrink", "state"),
    ("drop", "memory"),
    ("drop", "restarts"),
    ("drop", "uptime"),
    ("shrink", "service"),
)


def _states(services: list[dict[str, Any]], inline: bool) -> list[Text]:
    """Each state, and why its process last ended: on the same line, or the next."""
    cells = []
    for s in services:
        cell = Text(s["state"], style=STATE_STYLES.get(s["state"], ""))
        if s["state"] in FAILED and s.get("last_exit"):
            cell.append(f"{' ' if inline else chr(10)}({s['last_exit']})", style="dim")
        cells.append(cell)
    return cells


def status_columns(services: list[dict[str, Any]]) -> list[Column]:
    """Every column of the status table, each at the width that shows it whole."""

    def number(header: str, values: list[str]) -> Column:
        return Column(header, _texts(values), "right")

    def optional(value: float | None, form: str) -> str:
        return "-" if value is None else form.format(value)

    state = Column("state", _states(services, inline=True), taller=_states(services, False))
    state.shrink_to = max(cell_len(s["state"]) for s in services) if services else None
    return [
        Column("service", _texts([s["name"] for s in services]), "left", NAME_MIN, "ellipsis"),
        number("#", [str(s["replica"]) for s in services]),
        state,
        number("pid", [str(s["pid"] or "-") for s in services]),
        number("uptime", [duration(s["uptime"]) for s in services]),
        number("restarts", [str(s["restarts"]) for s in services]),
        number("cpu %", [optional(s["cpu_percent"], "{:.1f}") for s in services]),
        number("memory", [size(s["rss_bytes"]) for s in services]),
        number("heartbeat", [optional(s["heartbeat_age"], "{:.1f}s") for s in services]),
        number(
            "requests",
            [
                f"{s['requests']}" + (f" ({s['errors']} err)" if s["errors"] else "")
                for s in services
            ],
        ),
    ]


def status_view(status: dict[str, Any], width: int) -> RenderableType:
    """The status in `width` cells: a title line, then the table."""
    services = status["services"]
    columns = fit(status_columns(services), width, STATUS_STEPS)
    return Group(_title(status["supervisor"], width), Text(""), draw(columns))


def _title(sup: dict[str, Any], width: int) -> Text:
    """procorch · pid · uptime · run directory; the directory shortened (from the left) to fit."""
    head = f"procorch · pid {sup['pid']} · up {duration(sup['uptime'])}"
    where = _home(sup["run_dir"])
    room = width - cell_len(head) - len(" · ")
    if cell_len(where) > room:
        # The end of a path is what tells two stacks apart: keep it, cut the start.
        where = "…" + where[-(room - 1) :] if room > 10 else ""
    return Text(f"{head} · {where}" if where else head, style="bold", no_wrap=True)


def print_status(status: dict[str, Any]) -> None:
    out = console()
    out.print(status_view(status, out.width))


def console() -> Console:
    """Standard output as the tables are drawn on it: the terminal's width, or 250 if piped."""
    # No markup, emoji or highlighting to look for in these cells: skipping them is faster.
    out = Console(highlight=False, markup=False, emoji=False)
    if not out.is_terminal:  # piped: no terminal width to respect
        out = Console(width=250, highlight=False, markup=False, emoji=False)
    return out


def print_json(data: Any) -> None:
    from rich.json import JSON

    Console().print(JSON.from_data(data))


# == the services table ===============================================================

# Pids wrap onto more lines first (a service with many replicas has many), then the
# socket address goes (it follows from the run directory and the name), then the kind.
SERVICES_STEPS = (
    ("shrink", "pids"),
    ("drop", "address"),
    ("drop", "kind"),
    ("drop", "requests"),
    ("shrink", "service"),
)


def services_columns(registry: dict[str, dict[str, Any]]) -> list[Column]:
    """Every column of the services table, each at the width that shows it whole."""
    entries = list(registry.values())
    running = [sum(r["state"] == "running" for r in e["replicas"]) for e in entries]
    pids = [[str(r["pid"]) for r in e["replicas"] if r["pid"]] for e in entries]
    addresses = []
    for e in entries:
        sockets = [_near(r["socket"]) for r in e["replicas"] if r["socket"]]
        addresses.append(
            sockets[0].rsplit(".", 1)[0] + ".N" if len(sockets) > 1 else (sockets or ["-"])[0]
        )
    return [
        Column("service", _texts(list(registry)), "left", NAME_MIN, "ellipsis"),
        Column("kind", _texts([e["kind"] for e in entries])),
        Column(
            "running",
            [
                Text(
                    f"{n}/{len(e['replicas'])}", style="green" if n == len(e["replicas"]) else "red"
                )
                for n, e in zip(running, entries, strict=True)
            ],
            "right",
        ),
        Column(
            "pids",
            _texts([" ".join(p) or "-" for p in pids]),
            shrink_to=max((cell_len(pid) for p in pids for pid in p), default=1),
        ),
        Column("requests", _texts([str(e["requests"]) for e in entries]), "right"),
        Column("errors", _texts([str(e["errors"]) for e in entries]), "right"),
        Column("address", _texts(addresses)),
    ]


def print_services(registry: dict[str, dict[str, Any]]) -> None:
    out = console()
    out.print(draw(fit(services_columns(registry), out.width, SERVICES_STEPS)))
