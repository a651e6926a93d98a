"""What every command shares: exit codes, the common options, one-line failures,
loading the config and asking the daemon.

Imports no command module, so every command module can import it and nothing
imports back up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

# The commands take the exit codes and the status output from here, with the rest.
from procorch.cli.exits import (  # noqa: F401
    EXIT_CONFIG,
    EXIT_DAEMON_DOWN,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
)
from procorch.cli.fast import show, status_code  # noqa: F401
from procorch.config import Config, ConfigError, load_config
from procorch.locate import CONFIG_FILENAME
from procorch.supervisor import control
from procorch.supervisor.rundir import BadState, RunDir

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="PROCORCH_CONFIG",
        help=f"Config file [default: ./{CONFIG_FILENAME}].",
    ),
]
RunDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--run-dir",
        envvar="PROCORCH_RUN_DIR",
        help="Run directory [default: .procorch beside the config].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def fail(message: str, code: int = EXIT_DAEMON_DOWN) -> NoReturn:
    typer.echo(f"procorch: {message}", err=True)
    raise typer.Exit(code)


def load(config: Path | None, run_dir: Path | None, gateway: bool = False) -> Config:
    """The config for a command; a bad one ends the command with one line and exit 2."""
    try:
        return load_config(config, run_dir=run_dir, enable_gateway=gateway)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)


def not_running(cfg: Config) -> NoReturn:
    fail(f"procorch is not running (run directory {cfg.settings.run_dir})", EXIT_DAEMON_DOWN)


def request(cfg: Config, message: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Ask the daemon; a missing daemon or a refused request ends the command with one line."""
    try:
        return control.request(RunDir(cfg.settings.run_dir).socket, message, **kwargs)
    except control.DaemonNotRunning:
        not_running(cfg)
    except control.ControlError as exc:
        fail(str(exc), EXIT_DAEMON_DOWN)
    except TimeoutError:
        fail("the daemon did not answer in time", EXIT_DAEMON_DOWN)


def ask(run_dir: Path, message: dict[str, Any]) -> dict[str, Any] | None:
    """The daemon's answer, for a command that manages without one: None when there is
    none to be had (not running, refusing, gone mid-answer, too slow)."""
    try:
        return control.request(RunDir(run_dir).socket, message, timeout=control.ASK_TIMEOUT)
    except (control.DaemonNotRunning, control.ControlError, OSError):
        return None  # TimeoutError and ConnectionError are OSErrors


def wait_settled(cfg: Config, message: dict[str, Any], verb: str, quiet: bool) -> dict[str, Any]:
    """Send a request that waits, showing its progress on stderr until every process settles."""
    try:
        if quiet or not sys.stderr.isatty():
            return request(cfg, message, timeout=None)
        from rich.console import Console

        with Console(stderr=True).status(f"{verb}…") as spinner:

            def progress(p: dict[str, Any]) -> None:
                states = ", ".join(f"{n} {s}" for s, n in sorted(p["states"].items()))
                spinner.update(f"{verb}: {states} (of {p['total']})")

            return request(cfg, message, timeout=None, on_progress=progress)
    except KeyboardInterrupt:
        fail(
            f"interrupted; the daemon keeps running and goes on {verb} in the background "
            "(`procorch status` shows it, `procorch down` stops everything)",
            EXIT_INTERRUPTED,
        )


def existing_run_dir(cfg: Config) -> RunDir:
    """The run directory, for commands that read its files; one clear line if there is none."""
    rundir = RunDir(cfg.settings.run_dir)
    if not rundir.path.is_dir():
        fail(f"no run directory at {rundir.path}: procorch has not run here (see `procorch up`)")
    return rundir


def recorded_replicas(cfg: Config) -> list[tuple[str, int]]:
    """Every (service, replica) the run directory's state.json says the stack runs (or ran
    last), in start order; the config's if it never ran. Read without asking the daemon."""
    try:
        state = RunDir(cfg.settings.run_dir).read_state()
    except BadState:  # the daemon rewrites it soon; meanwhile the config is the best guess
        state = None
    if state and state.get("processes"):
        return [(p["service"], p["replica"]) for p in state["processes"]]
    return [(s.name, i) for s in cfg.services for i in range(s.replicas)]


def daemon_cwd(cfg: Config, foreground: bool = False) -> Path | None:
    """Where the daemon (and so every replica without a cwd) runs: the config's folder
    when detached, this process's own folder in the foreground (None: unchanged)."""
    return cfg.path.parent if cfg.path and not foreground else None


def refuse_broken_imports(cfg: Config, config: Path | None, foreground: bool = False) -> None:
    """A service module or job function that does not import is a bad config: exit 2,
    before anything starts or changes. Replicas run where the daemon does."""
    from procorch.importcheck import check_imports

    problem = check_imports(cfg, str(config or CONFIG_FILENAME), daemon_cwd(cfg, foreground))
    if problem:
        fail(problem, EXIT_CONFIG)
