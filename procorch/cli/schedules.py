"""`procorch job schedules`: the `[jobs.schedules]` entries and when each fires next.

Read from the config and the run directory's schedules.json (the last tick the daemon
fired); neither the daemon nor the store is asked. The schedule code (and croniter) is
imported inside the command, so other commands never pay for it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from procorch.cli.common import ConfigOpt, JsonOpt, RunDirOpt, load


def schedules(
    config: ConfigOpt = None, run_dir: RunDirOpt = None, as_json: JsonOpt = False
) -> None:
    """List the schedules of [jobs.schedules]: what each submits, how often, and the next
    and last tick (UTC). The daemon fires them while it runs."""
    from procorch.jobs.scheduler import listing

    rows = listing(load(config, run_dir), time.time())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no schedules: add them under [jobs.schedules] (see the README)")
        return
    _print_table(rows)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from procorch import render
    from procorch.jobs.job import call_text

    def call(row: dict[str, Any]) -> str:
        return call_text(row["function"], row["args"], row["kwargs"])

    def last(row: dict[str, Any]) -> str:
        return "-" if row["last"] is None else f"{row['last']} (job {row['last_job_id']})"

    columns = [
        render.Column("schedule", [render.cell(row["name"]) for row in rows]),
        render.Column("job", [render.cell(call(row)) for row in rows], shrink_to=12),
        render.Column("when", [render.cell(row["spec"]) for row in rows]),
        render.Column("next (UTC)", [render.cell(row["next"]) for row in rows]),
        render.Column("last (UTC)", [render.cell(last(row)) for row in rows]),
    ]
    render.print_table(columns, (("shrink", "job"),))
