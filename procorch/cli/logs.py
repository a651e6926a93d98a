"""Reading what happened: `logs` (services' captured output) and `events`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from procorch.cli.common import ConfigOpt, JsonOpt, RunDirOpt, existing_run_dir, fail, load


def logs(
    name: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many lines.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new output.")
    ] = False,
) -> None:
    """Show the captured output (stdout and stderr) of services."""
    from procorch.supervisor.logs import tail_lines

    cfg = load(config, run_dir)
    rundir = existing_run_dir(cfg)
    services = cfg.services
    if name is not None:
        try:
            services = (cfg.service(name),)
        except KeyError:
            known = ", ".join(s.name for s in cfg.services)
            fail(f"no service named {name!r} (known: {known})")
    files = [
        (f"{s.name}.{i}", rundir.log_path(s.name, i)) for s in services for i in range(s.replicas)
    ]
    prefix = len(files) > 1
    width = max(len(label) for label, _ in files)
    for label, path in files:
        for line in tail_lines(path, lines):
            typer.echo(f"{label:<{width}} | {line}" if prefix else line)
    if follow:
        _follow(files, width if prefix else None)


def _follow(files: list[tuple[str, Path]], width: int | None) -> NoReturn:
    """tail -f over several files; notices rotation (the file got smaller or was replaced)."""
    positions = {path: (path.stat().st_size if path.exists() else 0) for _, path in files}
    try:
        while True:
            for label, path in files:
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if size < positions[path]:
                    positions[path] = 0
                if size > positions[path]:
                    with open(path, "rb") as f:
                        f.seek(positions[path])
                        data = f.read()
                    positions[path] += len(data)
                    for line in data.decode(errors="replace").splitlines():
                        typer.echo(f"{label:<{width}} | {line}" if width else line)
            time.sleep(0.2)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def events(
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many events.")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Show the event log: starts, exits, restarts, health kills, FATAL."""
    cfg = load(config, run_dir)
    entries = existing_run_dir(cfg).read_events(lines)
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        who = f"{e['service']}.{e['replica']}" if "service" in e else "procorch"
        pid = f" pid {e['pid']}" if "pid" in e else ""
        detail = f": {e['detail']}" if e.get("detail") else ""
        typer.echo(f"{e['time']}  {who:<20} {e['event']}{pid}{detail}")


def register(app: typer.Typer) -> None:
    app.command()(logs)
    app.command()(events)
