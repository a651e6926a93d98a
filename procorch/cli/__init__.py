"""The `procorch` command line (Typer): one module per group of commands.

`common` holds the exit codes, shared options and helpers and imports no command;
`lifecycle` (up, down, status, start, stop, restart, init), `logs` (logs, events),
`services` (call, services) and `jobs` (`job ...`) each register their commands
here. User errors print one line to stderr and exit non-zero, never a traceback.
Exit codes: 0 fine, 1 the daemon is not running (or a refused request), 2 bad
config or usage, 3 some service is not running.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from procorch import __version__
from procorch.cli import lifecycle, logs, services

app = typer.Typer(
    help="Run a set of services on one machine and keep them alive.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"procorch {__version__}")
        raise typer.Exit()


# Given before the command (`procorch -c shop.toml status`, as docker compose takes -f),
# these reach it through the variables its own options read.
_GLOBAL_OPTIONS = ("--config", "-c", "--run-dir")  # each takes a value


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config file, for any command.")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory, for any command.")
    ] = None,
) -> None:
    """procorch: a process orchestrator."""
    if config is not None:
        os.environ["PROCORCH_CONFIG"] = str(config)
    if run_dir is not None:
        os.environ["PROCORCH_RUN_DIR"] = str(run_dir)


for _group in (lifecycle, logs, services):
    _group.register(app)


def _job_commands_may_run(argv: list[str]) -> bool:
    """Whether this run may need `job ...`/`submit-job`: not when it runs another command.

    Building the job commands costs `status` and the rest ~8 ms of ~90 for nothing, so
    they are added only for a bare `procorch`, `--help`, completion, or a word that is
    not another command (the job commands, or a typo that deserves the full list).
    """
    if any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ):
        return True
    others = {info.name or info.callback.__name__ for info in app.registered_commands}
    return _command_word(argv) not in others


def _command_word(argv: list[str]) -> str | None:
    """The command named in `argv`: its first word that is neither an option nor its value."""
    words = iter(argv[1:])
    for word in words:
        if word in _GLOBAL_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


if _job_commands_may_run(sys.argv):
    from procorch.cli import jobs as _jobs

    _jobs.register(app)
