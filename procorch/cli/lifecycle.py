"""The lifecycle commands: up, down, status (ps), start, stop, restart and init."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from procorch.cli import complete, fast
from procorch.cli.common import (
    EXIT_CONFIG,
    EXIT_DAEMON_DOWN,
    ConfigOpt,
    JsonOpt,
    RunDirOpt,
    daemon_cwd,
    fail,
    load,
    refuse_broken_imports,
    request,
    show,
    status_code,
    wait_settled,
)
from procorch.config import AUTO_TOKEN, Config
from procorch.locate import CONFIG_FILENAME
from procorch.supervisor import control
from procorch.supervisor.rundir import RunDir

DAEMON_START_TIMEOUT = 30.0
ServiceNames = Annotated[
    list[str],
    typer.Argument(
        help="Services (or one replica: api.1).", autocompletion=complete.SERVICES_AND_REPLICAS
    ),
]


def up(
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    foreground: Annotated[
        bool,
        typer.Option("--foreground", "-f", help="Stay attached and show every service's output."),
    ] = False,
    gateway: Annotated[
        bool, typer.Option("--gateway", help="Also serve the HTTP gateway ([gateway] table).")
    ] = False,
    token: Annotated[
        bool,
        typer.Option(
            "--token",
            help="The gateway wants a token, made and kept in the run directory "
            '(`procorch gateway-token` prints it); as [gateway] token = "auto".',
        ),
    ] = False,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload", help="On a daemon running another config: apply it live (as `reload`)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start the supervisor daemon and every service; return once they are all running."""
    cfg = _with_token(load(config, run_dir, gateway), token)
    rundir = RunDir(cfg.settings.run_dir)
    _warn_if_exposed(cfg)
    refuse_broken_imports(cfg, config, foreground)
    _check_guardrails(cfg)
    if foreground:
        raise typer.Exit(_up_foreground(cfg))
    if rundir.daemon_alive() or not _spawn_daemon(cfg, rundir):
        _already_running(cfg, run_dir, as_json, reload, gateway, token)
    status = wait_settled(cfg, {"cmd": "wait"}, "starting", quiet=as_json)
    show(status, as_json)
    code = status_code(status)
    if not as_json:
        if code:
            _explain_failures(cfg, status)
        _next_steps(cfg)
    raise typer.Exit(code)


def _already_running(
    cfg: Config, run_dir: Path | None, as_json: bool, reload: bool, gateway: bool, token: bool
) -> NoReturn:
    """`up` on a running daemon: fine (exit 0) if it runs this config; else the plan
    that `reload` would carry out, carried out with `up --reload`. Not asking for the
    gateway or a token keeps what the daemon was given; asking adds it."""
    from procorch.cli.operate import apply_reload, like_running
    from procorch.supervisor.reloadplan import Plan, describe

    cfg = like_running(cfg, run_dir, gateway, token)
    if reload:  # `up` checked the imports already
        raise typer.Exit(apply_reload(cfg, None, False, as_json, imports_checked=True))
    wanted = json.loads(cfg.to_json())
    plan = Plan.from_json(
        request(cfg, {"cmd": "reload", "config": wanted, "dry_run": True})["plan"]
    )
    status = request(cfg, {"cmd": "status"})
    pid = status["supervisor"]["pid"]
    if not plan.empty or plan.refused:
        how = (
            "to run this one: `procorch down`, then `procorch up`"
            if plan.refused
            else "to apply it live: `procorch up --reload` (or `procorch reload`)"
        )
        fail(
            f"procorch is already running (pid {pid}) with another config; the difference:"
            + "".join(f"\n  {line}" for line in describe(replace(plan, unchanged=())))
            + f"\n{how}",
            EXIT_DAEMON_DOWN,
        )
    if not as_json:
        typer.echo(f"procorch is already running (pid {pid}) in {cfg.settings.run_dir}", err=True)
    show(status, as_json)
    raise typer.Exit(0)  # nothing was started twice, and that is what was asked


def _with_token(cfg: Config, token: bool) -> Config:
    """`cfg` with the automatic gateway token (`up --token`), unless it has a token."""
    if not token or cfg.gateway.token:
        return cfg
    return replace(cfg, gateway=replace(cfg.gateway, token=AUTO_TOKEN))


def _next_steps(cfg: Config) -> None:
    """What a user types next: the gateway's address when it runs, and the usual commands."""
    gw = cfg.gateway
    if gw.enabled:
        host = f"[{gw.host}]" if ":" in gw.host else gw.host
        url = f"http://{host}:{gw.port}/"
        token = " (send the token: Authorization: Bearer ...)" if gw.token else ""
        if gw.token == AUTO_TOKEN:
            token = " (send the token: Authorization: Bearer $(procorch gateway-token))"
        typer.echo(f"gateway: {url}{token}", err=True)
        typer.echo("dashboard: procorch dashboard (prints its address)", err=True)
        if gw.token is None and gw.is_loopback:  # elsewhere, _warn_if_exposed warned
            typer.echo(
                f"procorch: the gateway at {url} takes requests without a token from any "
                "local user; `procorch up --gateway --token` makes one "
                "(see `procorch gateway-token`)",
                err=True,
            )
    typer.echo(
        "next: procorch status · procorch logs -f · procorch events · procorch down", err=True
    )


def _check_guardrails(cfg: Config) -> None:
    """`user`/`group` without root, a raised hard limit without the capability: exit 2
    before anything starts (the daemon checks again: it is what has to run them)."""
    from procorch.supervisor.guardrails import start_problem

    problem = start_problem(cfg.services)
    if problem:
        fail(problem, EXIT_CONFIG)


def _warn_if_exposed(cfg: Config) -> None:
    gw = cfg.gateway
    if gw.enabled and gw.token is None and not gw.is_loopback:
        typer.echo(
            f"procorch: warning: the gateway listens on {gw.host}:{gw.port} without a token: "
            "anyone who can reach it can use it (set PROCORCH_TOKEN or [gateway] token)",
            err=True,
        )


def _up_foreground(cfg: Config) -> int:
    import gc

    from procorch.supervisor.daemon import serve

    gc.enable()  # the entry point turned it off for a short run; this one is long

    def ready(error: str | None) -> None:
        if error == "already running":
            fail(f"procorch is already running in {cfg.settings.run_dir}; nothing started")
        if error:
            fail(error)
        typer.echo(f"procorch running in the foreground ({cfg.settings.run_dir}); Ctrl-C stops it")

    return serve(cfg, foreground=True, ready=ready)


def _spawn_daemon(cfg: Config, rundir: RunDir) -> bool:
    """Start a detached daemon; False if another daemon won the run directory first."""
    import select
    import subprocess

    try:
        rundir.create()
    except OSError as exc:
        fail(f"cannot use run directory {rundir.path}: {exc.strerror or exc}")
    log_fd = os.open(rundir.daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "procorch.supervisor"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            start_new_session=True,
            close_fds=True,
            cwd=daemon_cwd(cfg),
        )
    finally:
        os.close(log_fd)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(cfg.to_json().encode())
    proc.stdin.close()
    ready, _, _ = select.select([proc.stdout], [], [], DAEMON_START_TIMEOUT)
    line = proc.stdout.readline().decode().strip() if ready else ""
    proc.stdout.close()
    if line == "ok":
        return True
    if line == "error: already running":
        return False
    from procorch.supervisor.logs import tail_lines

    if line:
        detail = line.removeprefix("error: ")
    elif proc.poll() is None:
        proc.kill()
        detail = f"the daemon did not start within {DAEMON_START_TIMEOUT:.0f}s"
    else:
        detail = "the daemon exited while starting"
    tail = tail_lines(rundir.daemon_log, 5) if not line else []
    fail(detail + ("".join(f"\n  {t}" for t in tail)), 1)


def _explain_failures(cfg: Config, status: dict[str, Any]) -> None:
    """Each failed replica: why, and the last lines its last process wrote (none older)."""
    from procorch.render import FAILED
    from procorch.supervisor.logs import tail_lines

    rundir = RunDir(cfg.settings.run_dir)
    for s in status["services"]:
        if s["state"] in FAILED:
            typer.echo(
                f"\n{s['name']}.{s['replica']} is {s['state'].upper()}: {s['last_exit']}", err=True
            )
            log = rundir.log_path(s["name"], s["replica"])
            for line in tail_lines(log, 10, start=s.get("log_offset") or 0):
                typer.echo(f"  | {line}", err=True)
            if s.get("err_log_offset") is not None:  # stderr = "separate": a traceback is here
                err = rundir.err_log_path(s["name"], s["replica"])
                for line in tail_lines(err, 10, start=s["err_log_offset"]):
                    typer.echo(f"  ! {line}", err=True)


def down(config: ConfigOpt = None, run_dir: RunDirOpt = None) -> None:
    """Stop every service and the daemon; return once no process is left."""
    started = time.monotonic()
    cfg = load(config, run_dir)
    code = fast.down(RunDir(cfg.settings.run_dir).socket, started)
    if code is None:  # as `docker compose down` on a stopped project: nothing to do
        typer.echo(
            f"procorch is not running (run directory {cfg.settings.run_dir}): nothing to stop"
        )
        code = 0
    raise typer.Exit(code)


# == status and control ============================================================


def status(
    name: Annotated[
        str | None,
        typer.Argument(help="Only this service.", autocompletion=complete.SERVICES),
    ] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every second.")] = False,
) -> None:
    """Show every process: state, pid, uptime, restarts, CPU, memory, heartbeat, requests."""
    cfg = load(config, run_dir)
    message = {"cmd": "status", "names": [name] if name else []}
    if watch and not as_json:
        _watch(cfg, message)
    result = request(cfg, message)
    show(result, as_json)
    raise typer.Exit(status_code(result))


def _watch(cfg: Config, message: dict[str, Any]) -> NoReturn:
    """Redraw the status every second, to the terminal's width, until Ctrl-C (exit 0).

    If the daemon stops (or stops answering) meanwhile, the table, now stale, is taken
    off the screen and one line says why (exit 1): a table left standing looks live.
    """
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from procorch import render

    out = Console(highlight=False, markup=False, emoji=False)
    status = request(cfg, message)  # not running at all: the usual one line
    try:
        with Live(render.status_view(status, out.width), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(1.0)
                try:
                    status = control.request(RunDir(cfg.settings.run_dir).socket, message)
                except (control.DaemonNotRunning, ConnectionError):
                    problem = f"daemon stopped (pid {status['supervisor']['pid']})"
                except TimeoutError:
                    problem = "the daemon did not answer in time"
                except control.ControlError as exc:  # a new daemon without this service
                    problem = str(exc)
                else:
                    live.update(render.status_view(status, out.width), refresh=True)
                    continue
                live.update(Text(""), refresh=True)
                break
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    fail(problem)  # exit 1, as for a daemon that is not running


def _control(
    cmd: str, names: list[str], config: Path | None, run_dir: Path | None, as_json: bool
) -> NoReturn:
    cfg = load(config, run_dir)
    result = wait_settled(cfg, {"cmd": cmd, "names": names}, f"{cmd}ing", quiet=as_json)
    show(result, as_json)
    if cmd == "stop":
        raise typer.Exit(0)
    raise typer.Exit(status_code(result))


def restart(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Services (or one replica: api.1) to restart [default: all].",
            autocompletion=complete.SERVICES_AND_REPLICAS,
        ),
    ] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    rolling: Annotated[
        bool,
        typer.Option(
            "--rolling",
            help="One replica at a time: start a replacement, wait until it is ready, "
            "then stop the old one (no moment without a running replica).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restart services (all by default); also clears FATAL."""
    if rolling:
        if not names:
            fail("restart --rolling needs the services to restart", EXIT_CONFIG)
        cfg = load(config, run_dir)
        message = {"cmd": "restart", "names": names, "rolling": True}
        result = wait_settled(cfg, message, "restarting", quiet=as_json)
        from procorch.cli.operate import report

        raise typer.Exit(report(result, as_json))
    _control("restart", names or [], config, run_dir, as_json)


def start(
    names: ServiceNames,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start stopped (or FATAL) services."""
    _control("start", names, config, run_dir, as_json)


def stop(
    names: ServiceNames,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop services; they stay stopped until `start` or `restart`."""
    _control("stop", names, config, run_dir, as_json)


def init(
    path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path(CONFIG_FILENAME),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example procorch.toml (into PATH/procorch.toml if PATH is a directory)."""
    from procorch.config import EXAMPLE_TOML

    if path.is_dir():
        path = path / CONFIG_FILENAME
    if path.exists() and not force:
        fail(f"{path} already exists (use --force to overwrite)")
    try:
        path.write_text(EXAMPLE_TOML)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_CONFIG)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    for command in (up, down, status, restart, start, stop, init):
        app.command()(command)
    app.command("ps", help="Same as `procorch status`.")(status)
