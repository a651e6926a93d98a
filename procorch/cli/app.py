"""The `procorch` Typer application: one module per group of commands registers its own.

`common` holds the exit codes, shared options and helpers and imports no command;
`lifecycle` (up, down, status, start, stop, restart, init), `logs` (logs, events),
`services` (call, services), `jobs` (`job ...`), `export`, `signals` (signal) and
`operate` (reload, scale) each register their commands
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
from procorch.cli import complete

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


# The words each group of commands registers. A run that names one builds only that group:
# Typer inspects every registered command at each start (~4 ms of `status`), and each
# group costs its import. A bare `procorch`, --help, completion or a word no group has (a
# typo, which deserves the whole list) builds them all.
GROUPS = {
    "lifecycle": ("up", "down", "status", "ps", "restart", "start", "stop", "init"),
    "logs": ("logs", "events"),
    "services": ("call", "services", "gateway-token", "dashboard"),
    "jobs": ("job", "submit-job"),
    "operate": ("reload", "scale"),
    "export": ("export",),
    "signals": ("signal",),
}


def groups_for(argv: list[str]) -> list[str]:
    """The groups of commands this run may need (see GROUPS)."""
    if not complete.COMPLETING:
        word = _command_word(argv)
        for group, words in GROUPS.items():
            if word in words:
                return [group]
    return list(GROUPS)


def _command_word(argv: list[str]) -> str | None:
    """The command named in `argv`: its first word that is neither an option nor its value."""
    words = iter(argv[1:])
    for word in words:
        if word in _GLOBAL_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


for _group in groups_for(sys.argv):
    # __import__, not importlib.import_module: -X importtime sees only the former
    __import__(f"procorch.cli.{_group}")
    sys.modules[f"procorch.cli.{_group}"].register(app)
