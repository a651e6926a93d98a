"""How the CLI shows things to people: the Rich status table and human-friendly units.

Imported only by commands that draw, so Rich's import cost stays off the paths
that print JSON.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "running": "bold green",
    "starting": "yellow",
    "backoff": "bold yellow",
    "stopping": "yellow",
    "stopped": "dim",
    "exited": "magenta",
    "fatal": "bold red",
}


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
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def status_table(status: dict[str, Any]) -> Table:
    sup = status["supervisor"]
    table = Table(
        title=f"procorch · pid {sup['pid']} · up {duration(sup['uptime'])} · {sup['run_dir']}",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column, justify in (
        ("service", "left"),
        ("#", "right"),
        ("state", "left"),
        ("pid", "right"),
        ("uptime", "right"),
        ("restarts", "right"),
        ("cpu %", "right"),
        ("memory", "right"),
        ("heartbeat", "right"),
        ("requests", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for s in status["services"]:
        state = Text(s["state"], style=STATE_STYLES.get(s["state"], ""))
        if s["state"] in ("exited", "fatal", "backoff") and s.get("last_exit"):
            state.append(f" ({s['last_exit']})", style="dim")
        hb = s["heartbeat_age"]
        table.add_row(
            s["name"],
            str(s["replica"]),
            state,
            str(s["pid"] or "-"),
            duration(s["uptime"]),
            str(s["restarts"]),
            "-" if s["cpu_percent"] is None else f"{s['cpu_percent']:.1f}",
            size(s["rss_bytes"]),
            "-" if hb is None else f"{hb:.1f}s",
            f"{s['requests']}" + (f" ({s['errors']} err)" if s["errors"] else ""),
        )
    return table


def print_status(status: dict[str, Any]) -> None:
    _console().print(status_table(status))


def _console() -> Console:
    # No markup, emoji or highlighting to look for in these cells: skipping them is faster.
    console = Console(highlight=False, markup=False, emoji=False)
    if not console.is_terminal:  # piped: no terminal width to respect
        console = Console(width=250, highlight=False, markup=False, emoji=False)
    return console


def print_json(data: Any) -> None:
    from rich.json import JSON

    Console().print(JSON.from_data(data))


def print_services(registry: dict[str, dict[str, Any]]) -> None:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column, justify in (
        ("service", "left"),
        ("kind", "left"),
        ("running", "right"),
        ("pids", "left"),
        ("requests", "right"),
        ("errors", "right"),
        ("address", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for name, entry in registry.items():
        replicas = entry["replicas"]
        running = sum(r["state"] == "running" for r in replicas)
        sockets = [r["socket"] for r in replicas if r["socket"]]
        table.add_row(
            name,
            entry["kind"],
            Text(
                f"{running}/{len(replicas)}", style="green" if running == len(replicas) else "red"
            ),
            " ".join(str(r["pid"]) for r in replicas if r["pid"]) or "-",
            str(entry["requests"]),
            str(entry["errors"]),
            sockets[0].rsplit(".", 1)[0] + ".N" if len(sockets) > 1 else (sockets or ["-"])[0],
        )
    _console().print(table)
