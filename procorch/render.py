"""How the CLI shows things to people: the status, services and schedules tables, human
units.

Drawn with `procorch.terminal`, not Rich: `status` is the command people run most, and
Rich's import alone cost a third of its time. `status --watch` hands the same lines to
Rich's Live (`status_view`).

The tables fit the terminal. Every column is measured first; when the rows are wider
than the terminal, the least useful columns go or narrow in a fixed order (`fit`), so
Rich never has to cut a pid to `2…` or a state to `runn…`. With more width, more shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from procorch.sizes import format_size
from procorch.terminal import Styled, Terminal, cell_len, split_lines

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

Cell = list[Styled]  # a table cell: its lines


def cell(text: str, style: str = "") -> Cell:
    return split_lines(text, style)


class Column:
    """A column's header and cells, and how far it may narrow (if at all).

    A plain class, not a dataclass: importing dataclasses (it imports inspect) was a
    sixth of what `status` spent drawing."""

    def __init__(
        self,
        header: str,
        cells: list[Cell],
        justify: Literal["left", "right"] = "left",
        shrink_to: int | None = None,
        overflow: Literal["fold", "ellipsis"] = "fold",
        taller: list[Cell] | None = None,
    ) -> None:
        self.header = header
        self.cells = cells
        self.justify = justify
        self.shrink_to = shrink_to  # the narrowest it may become; None: always whole
        self.overflow = overflow  # how a cell gives way once narrowed
        self.taller = taller  # the same cells on more lines, to use when narrower
        self.natural = self.width = 0  # the width that shows every cell whole; the chosen
        self._measure()

    def _measure(self) -> None:
        widths = [line.width for cell in self.cells for line in cell]
        self.natural = self.width = max([cell_len(self.header), *widths])

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


def draw(columns: Sequence[Column]) -> list[Styled]:
    """The table: a bold header, a rule, then the rows; each column as wide as `fit` chose,
    GAP cells apart. Anything still wider than the terminal (only where the steps could
    not help) is cut at its edge when written, as Rich crops."""
    lines = [
        _line(columns, [[Styled(c.header, "bold")] for c in columns]),
        Styled("─" * table_width(columns)),
    ]
    for cells in zip(*(c.cells for c in columns), strict=True):
        blocks = [_cell_lines(c, cell) for c, cell in zip(columns, cells, strict=True)]
        for i in range(max(len(block) for block in blocks)):
            lines.append(_line(columns, [block[i : i + 1] for block in blocks]))
    return lines


def _line(columns: Sequence[Column], pieces: list[list[Styled]]) -> Styled:
    """One line of the table, from each column's piece of it (none: blank)."""
    line = Styled()
    for i, (column, piece) in enumerate(zip(columns, pieces, strict=True)):
        text = piece[0] if piece else Styled()
        space = " " * (column.width - text.width)
        if i:
            line.append(" " * GAP)
        if column.justify == "right":
            line.append(space).extend(text)
        else:
            line.extend(text).append(space)
    return line.rstrip()


def _cell_lines(column: Column, lines: Cell) -> list[Styled]:
    """A cell's lines in its column: whole, or given way as the column allows."""
    if not column.narrowed:
        return lines
    if column.overflow == "ellipsis":
        return [line.truncated(column.width) for line in lines]
    return [part for line in lines for part in line.wrapped(column.width)]


def _texts(values: list[str]) -> list[Cell]:
    return [cell(v) for v in values]


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


def _states(services: list[dict[str, Any]], inline: bool) -> list[Cell]:
    """Each state, and why its process last ended: on the same line, or the next."""
    cells = []
    for s in services:
        lines = [Styled(s["state"], STATE_STYLES.get(s["state"], ""))]
        if s["state"] in FAILED and s.get("last_exit"):
            reason = f"({s['last_exit']})"
            if inline:
                lines[0].append(" " + reason, "dim")
            else:
                lines.append(Styled(reason, "dim"))
        cells.append(lines)
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


def status_lines(status: dict[str, Any], width: int) -> list[Styled]:
    """The status in `width` cells: a title line, a blank one, then the table."""
    columns = fit(status_columns(status["services"]), width, STATUS_STEPS)
    return [_title(status["supervisor"], width), Styled(), *draw(columns)]


def status_view(status: dict[str, Any], width: int) -> Any:
    """The same lines as one Rich `Text`, for `status --watch`'s Live display."""
    from rich.text import Text

    lines = [Text.assemble(*line.runs) for line in status_lines(status, width)]
    return Text("\n", no_wrap=True, overflow="ignore").join(lines)


def _title(sup: dict[str, Any], width: int) -> Styled:
    """procorch · pid · uptime · run directory; the directory shortened (from the left) to fit."""
    head = f"procorch · pid {sup['pid']} · up {duration(sup['uptime'])}"
    where = _home(sup["run_dir"])
    room = width - cell_len(head) - len(" · ")
    if cell_len(where) > room:
        # The end of a path is what tells two stacks apart: keep it, cut the start.
        where = "…" + where[-(room - 1) :] if room > 10 else ""
    return Styled(f"{head} · {where}" if where else head, "bold")


def print_status(status: dict[str, Any]) -> None:
    out = Terminal.detect()
    out.write(status_lines(status, out.width))


def print_table(columns: list[Column], steps: Sequence[tuple[str, str]]) -> None:
    """A table on standard output, fitted to its width."""
    out = Terminal.detect()
    out.write(draw(fit(columns, out.width, steps)))


def print_json(data: Any) -> None:
    from rich.console import Console
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
                cell(f"{n}/{len(e['replicas'])}", "green" if n == len(e["replicas"]) else "red")
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
    print_table(services_columns(registry), SERVICES_STEPS)
