"""The `procorch` command line (Typer).

Each command finds the run directory from the config, then either talks to the
daemon over the control socket or reads the run directory's files. User errors
print one line to stderr and exit non-zero, never a traceback. Exit codes:
0 fine, 1 the daemon is not running (or a refused request), 2 bad config or usage,
3 some service is not running.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from procorch import __version__
from procorch.config import CONFIG_FILENAME, GATEWAY_NAME, Config, ConfigError, load_config
from procorch.supervisor import control
from procorch.supervisor.rundir import RunDir

EXIT_DAEMON_DOWN = 1
EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3
DAEMON_START_TIMEOUT = 30.0

app = typer.Typer(
    help="Run a set of services on one machine and keep them alive.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

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


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"procorch: {message}", err=True)
    raise typer.Exit(code)


def _config(config: Path | None, run_dir: Path | None, gateway: bool = False) -> Config:
    try:
        return load_config(config, run_dir=run_dir, enable_gateway=gateway)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)


def _not_running(cfg: Config) -> NoReturn:
    fail(f"procorch is not running (run directory {cfg.settings.run_dir})", EXIT_DAEMON_DOWN)


def _request(cfg: Config, message: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Ask the daemon; a missing daemon or a refused request ends the command with one line."""
    try:
        return control.request(RunDir(cfg.settings.run_dir).socket, message, **kwargs)
    except control.DaemonNotRunning:
        _not_running(cfg)
    except control.ControlError as exc:
        fail(str(exc), EXIT_DAEMON_DOWN)
    except TimeoutError:
        fail("the daemon did not answer in time", EXIT_DAEMON_DOWN)


def _existing_run_dir(cfg: Config) -> RunDir:
    """The run directory, for commands that read its files; one clear line if there is none."""
    rundir = RunDir(cfg.settings.run_dir)
    if not rundir.path.is_dir():
        fail(f"no run directory at {rundir.path}: procorch has not run here (see `procorch up`)")
    return rundir


def _status_code(status: dict[str, Any]) -> int:
    ok = all(s["state"] == "running" for s in status["services"])
    return 0 if ok else EXIT_NOT_RUNNING


def _show(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(status, indent=2))
    else:
        from procorch.render import print_status

        print_status(status)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"procorch {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """procorch: a process orchestrator."""


# == up / down ====================================================================


@app.command()
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
    as_json: JsonOpt = False,
) -> None:
    """Start the supervisor daemon and every service; return once they are all running."""
    cfg = _config(config, run_dir, gateway)
    rundir = RunDir(cfg.settings.run_dir)
    _warn_if_exposed(cfg)
    if foreground:
        raise typer.Exit(_up_foreground(cfg))
    if rundir.daemon_alive() or not _spawn_daemon(cfg, rundir):
        status = _request(cfg, {"cmd": "status"})
        if not as_json:
            typer.echo(
                f"procorch is already running (pid {status['supervisor']['pid']}) "
                f"in {cfg.settings.run_dir}",
                err=True,
            )
            if cfg.gateway.enabled and not any(
                s["name"] == GATEWAY_NAME for s in status["services"]
            ):
                typer.echo(
                    "procorch: the running daemon has no gateway: `procorch down`, then "
                    "`procorch up --gateway`",
                    err=True,
                )
        _show(status, as_json)
        raise typer.Exit(0)  # nothing was started twice, and that is what was asked
    status = _wait_settled(cfg, {"cmd": "wait"}, "starting", quiet=as_json)
    _show(status, as_json)
    code = _status_code(status)
    if code and not as_json:
        _explain_failures(cfg, status)
    raise typer.Exit(code)


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
            fail(f"procorch is already running in {cfg.settings.run_dir}; nothing started", 0)
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
            cwd=cfg.path.parent if cfg.path else None,
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


def _wait_settled(cfg: Config, message: dict[str, Any], verb: str, quiet: bool) -> dict[str, Any]:
    """Send a request that waits, showing its progress on stderr until every process settles."""
    if quiet or not sys.stderr.isatty():
        return _request(cfg, message, timeout=None)
    from rich.console import Console

    with Console(stderr=True).status(f"{verb}…") as spinner:

        def progress(p: dict[str, Any]) -> None:
            states = ", ".join(f"{n} {s}" for s, n in sorted(p["states"].items()))
            spinner.update(f"{verb}: {states} (of {p['total']})")

        return _request(cfg, message, timeout=None, on_progress=progress)


def _explain_failures(cfg: Config, status: dict[str, Any]) -> None:
    from procorch.supervisor.logs import tail_lines

    rundir = RunDir(cfg.settings.run_dir)
    for s in status["services"]:
        if s["state"] in ("fatal", "exited", "backoff"):
            typer.echo(
                f"\n{s['name']}.{s['replica']} is {s['state'].upper()}: {s['last_exit']}", err=True
            )
            for line in tail_lines(rundir.log_path(s["name"], s["replica"]), 10):
                typer.echo(f"  | {line}", err=True)


@app.command()
def down(config: ConfigOpt = None, run_dir: RunDirOpt = None) -> None:
    """Stop every service and the daemon; return once no process is left."""
    cfg = _config(config, run_dir)
    rundir = RunDir(cfg.settings.run_dir)
    started = time.monotonic()
    timeout = max((s.stop_timeout for s in cfg.services), default=10.0) + 30.0
    try:
        reply = control.wait_closed(rundir.socket, {"cmd": "shutdown"}, timeout=timeout)
    except control.DaemonNotRunning:
        _not_running(cfg)
    except TimeoutError:
        fail(f"the daemon did not stop within {timeout:.0f}s", 1)
    typer.echo(f"procorch stopped (pid {reply.get('pid')}) in {time.monotonic() - started:.2f}s")


# == status and control ============================================================


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every second.")] = False,
) -> None:
    """Show every process: state, pid, uptime, restarts, CPU, memory, heartbeat, requests."""
    cfg = _config(config, run_dir)
    message = {"cmd": "status", "names": [name] if name else []}
    if watch and not as_json:
        _watch(cfg, message)
    result = _request(cfg, message)
    _show(result, as_json)
    raise typer.Exit(_status_code(result))


def _watch(cfg: Config, message: dict[str, Any]) -> NoReturn:
    from rich.live import Live

    from procorch.render import status_table

    try:
        with Live(status_table(_request(cfg, message)), auto_refresh=False) as live:
            while True:
                time.sleep(1.0)
                live.update(status_table(_request(cfg, message)), refresh=True)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _control(
    cmd: str, names: list[str], config: Path | None, run_dir: Path | None, as_json: bool
) -> NoReturn:
    cfg = _config(config, run_dir)
    result = _wait_settled(cfg, {"cmd": cmd, "names": names}, f"{cmd}ing", quiet=as_json)
    _show(result, as_json)
    if cmd == "stop":
        raise typer.Exit(0)
    raise typer.Exit(_status_code(result))


@app.command()
def restart(
    names: Annotated[
        list[str] | None, typer.Argument(help="Services to restart [default: all].")
    ] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restart services (all by default); also clears FATAL."""
    _control("restart", names or [], config, run_dir, as_json)


@app.command()
def start(
    name: Annotated[str, typer.Argument(help="The service to start.")],
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a stopped (or FATAL) service."""
    _control("start", [name], config, run_dir, as_json)


@app.command()
def stop(
    name: Annotated[str, typer.Argument(help="The service to stop.")],
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a service; it stays stopped until `start` or `restart`."""
    _control("stop", [name], config, run_dir, as_json)


# == talking to services ==============================================================


@app.command()
def call(
    service: Annotated[str, typer.Argument(help="The service, e.g. UserService.")],
    action: Annotated[str, typer.Argument(help="The action, e.g. create_user.")],
    data: Annotated[
        str | None, typer.Argument(help="The request data: a JSON object [default: {}].")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", min=0.001, help="Seconds to wait for the reply.")
    ] = 5.0,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a request to a service and print its reply (exit 1 on an error reply)."""
    try:
        payload = json.loads(data) if data is not None else {}
    except ValueError as exc:
        fail(f"the data is not JSON: {exc}", EXIT_CONFIG)
    if not isinstance(payload, dict):
        fail("the data must be a JSON object, like '{\"user_id\": 1}'", EXIT_CONFIG)
    cfg = _config(config, run_dir)
    from procorch.services.client import Client
    from procorch.services.protocol import ServiceError

    with Client(cfg.settings.run_dir, sender="cli") as client:
        try:
            result = client.call(service, action, payload, timeout=timeout)
        except ServiceError as exc:
            if as_json:
                typer.echo(
                    json.dumps({"status": "error", "code": exc.code, "message": exc.message})
                )
                raise typer.Exit(1) from None
            fail(f"{service}.{action}: {exc}")
    if as_json:
        typer.echo(json.dumps({"status": "success", "data": result}))
    else:
        from procorch.render import print_json

        print_json(result)


@app.command()
def services(config: ConfigOpt = None, run_dir: RunDirOpt = None, as_json: JsonOpt = False) -> None:
    """List the registry: each service's replicas, their sockets, and their request counts."""
    cfg = _config(config, run_dir)
    status = _request(cfg, {"cmd": "status", "names": []})
    registry = services_of(status)
    if as_json:
        typer.echo(json.dumps({"services": registry, "count": len(registry)}, indent=2))
    else:
        from procorch.render import print_services

        print_services(registry)


def services_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The daemon's status grouped by service: the registry as `services` shows it."""
    registry: dict[str, dict[str, Any]] = {}
    for p in status["services"]:
        entry = registry.setdefault(
            p["name"],
            {
                "kind": "python" if p["socket"] else "command",
                "requests": 0,
                "errors": 0,
                "replicas": [],
            },
        )
        entry["requests"] += p["requests"]
        entry["errors"] += p["errors"]
        entry["replicas"].append(
            {key: p[key] for key in ("replica", "state", "pid", "socket", "started_at")}
        )
    return registry


# == logs and events =================================================================


@app.command()
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

    cfg = _config(config, run_dir)
    rundir = _existing_run_dir(cfg)
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


@app.command()
def events(
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many events.")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Show the event log: starts, exits, restarts, health kills, FATAL."""
    cfg = _config(config, run_dir)
    entries = _existing_run_dir(cfg).read_events(lines)
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        who = f"{e['service']}.{e['replica']}" if "service" in e else "procorch"
        pid = f" pid {e['pid']}" if "pid" in e else ""
        detail = f": {e['detail']}" if e.get("detail") else ""
        typer.echo(f"{e['time']}  {who:<20} {e['event']}{pid}{detail}")


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path(CONFIG_FILENAME),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example procorch.toml."""
    from procorch.config import EXAMPLE_TOML

    if path.exists() and not force:
        fail(f"{path} already exists (use --force to overwrite)")
    path.write_text(EXAMPLE_TOML)
    typer.echo(f"wrote {path}")


# == jobs ==========================================================================


def _job_commands_may_run(argv: list[str]) -> bool:
    """Whether this run may need `job ...`/`submit-job`: not when it runs another command.

    Building the job commands costs `status` and the rest ~8 ms of ~90 for nothing, so
    they are added only for a bare `procorch`, `--help`, completion, or a word that is
    not another command (the job commands, or a typo that deserves the full list).
    """
    if any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ):
        return True
    others = {info.name or info.callback.__name__ for info in app.registered_commands}
    command = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
    return command not in others


if _job_commands_may_run(sys.argv):
    # At the end: the job commands (procorch/jobs/cli.py) use this module's options and fail().
    from procorch.jobs.cli import register as _register_jobs

    _register_jobs(app)
