"""`procorch signal NAME... SIG`: send any signal to services' running replicas.

The signal goes to each replica's main process (HUP to make a gunicorn or nginx
master reload itself, USR1 to reopen logs, ...), or with --group to its whole process
group. A bad signal is refused here, before the daemon is asked (exit 2).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from procorch.cli import complete
from procorch.cli.common import (
    EXIT_CONFIG,
    EXIT_NOT_RUNNING,
    ConfigOpt,
    JsonOpt,
    RunDirOpt,
    fail,
    load,
    request,
)


def signal_(
    names: Annotated[
        list[str],
        typer.Argument(
            help="Services (or one replica: api.1).",
            autocompletion=complete.SERVICES_AND_REPLICAS,
            show_default=False,
        ),
    ],
    sig: Annotated[
        str,
        typer.Argument(
            metavar="SIG", help="A signal name or number: HUP, SIGUSR1, 10.", show_default=False
        ),
    ],
    group: Annotated[
        bool,
        typer.Option(
            "--group", help="Signal each replica's whole process group, not only its main process."
        ),
    ] = False,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a signal to services' running replicas (exit 3 if some replica had no process)."""
    from procorch.config import parse_signal

    try:
        signum = parse_signal(sig)
    except ValueError as exc:
        fail(str(exc), EXIT_CONFIG)
    cfg = load(config, run_dir)
    message = {"cmd": "signal", "names": names, "signal": int(signum), "group": group}
    answer = request(cfg, message)
    results = answer["results"]
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    for r in results:
        label = f"{r['name']}.{r['replica']}"
        if r["signalled"]:
            if not as_json:
                typer.echo(f"{label} (pid {r['pid']}): {answer['signal']}")
        else:
            typer.echo(f"procorch: {label} is {r['state']}: not signalled", err=True)
    raise typer.Exit(0 if all(r["signalled"] for r in results) else EXIT_NOT_RUNNING)


def register(app: typer.Typer) -> None:
    app.command("signal")(signal_)
