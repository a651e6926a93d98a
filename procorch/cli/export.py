"""`procorch export`: this stack in another supervisor's terms.

`export systemd` writes a unit that runs `procorch up --foreground` at boot, so the
daemon itself is supervised (`Type=notify`: the daemon sends READY=1 once its control
socket answers; `KillMode=mixed`: systemd's SIGTERM goes to the daemon alone, which
stops services dependents first, and only what is left at the timeout is killed).
`export compose` writes a compose file with one service per command service, its
command and environment as replica 0 gets them, an `env_file` named, not inlined (its
values may be secrets). Python services (`module = ...`) are not exported: they talk to
each other and beat their hearts through the supervisor's run directory, so they stay
under procorch; nor are services whose replicas differ ({replica} or {port}), as compose
runs identical replicas.

The texts are built by pure functions (`systemd_unit`, `compose_file`); the YAML is
written by hand for its one fixed shape, every scalar a JSON string (JSON is YAML), so
no YAML library is needed at run time.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from procorch.cli.common import EXIT_CONFIG, ConfigOpt, RunDirOpt, fail, load
from procorch.config import (
    Config,
    ConfigError,
    ServiceConfig,
    escape_braces,
    read_env_file,
)

app = typer.Typer(
    help="Write this stack as a systemd unit or a compose file.", no_args_is_help=True
)

OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write the file into this directory instead of printing it."
    ),
]
UserOpt = Annotated[
    bool,
    typer.Option("--user", help="A user unit (systemctl --user), not a system unit run as you."),
]
IMAGE = "${PROCORCH_IMAGE:-python:3.12-slim}"  # compose substitutes it when run
STOP_MARGIN = 5  # seconds systemd waits beyond the services' own stop timeouts


# == systemd ===================================================================================


def _systemd_word(text: str) -> str:
    """One argument of ExecStart= (or one Environment= assignment), quoted if it must be:
    systemd expands % specifiers and $ variables, and splits on spaces."""
    text = text.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stop_budget(services: tuple[ServiceConfig, ...]) -> int:
    """Seconds `down` may take: dependents stop first, level by level, each level as long
    as its slowest service's stop timeout."""
    level: dict[str, int] = {}
    for svc in services:  # in start order: what it depends on has its level already
        level[svc.name] = 1 + max((level[d] for d in svc.depends_on), default=0)
    slowest: dict[int, float] = {}
    for svc in services:
        slowest[level[svc.name]] = max(slowest.get(level[svc.name], 0.0), svc.stop_timeout)
    return int(sum(slowest.values()) + 0.999) + STOP_MARGIN


def unit_name(cfg: Config) -> str:
    """procorch-DIR.service, DIR the config's directory (a valid unit name)."""
    assert cfg.path is not None
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.path.parent.name).strip("-.") or "stack"
    return f"procorch-{stem}.service"


def systemd_unit(
    cfg: Config, procorch: list[str], path_env: str, user: str | None, user_unit: bool
) -> str:
    """A unit running the stack of `cfg` with `procorch` (the argv that runs procorch);
    `path_env`, the PATH its commands are found in; `user`, who runs it (system units)."""
    assert cfg.path is not None
    argv = [
        *procorch,
        "up",
        "--foreground",
        "-c",
        str(cfg.path),
        "--run-dir",
        str(cfg.settings.run_dir),
    ]
    lines = [
        f"# procorch export systemd: the stack of {cfg.path}, started at boot.",
        f"# {'~/.config/systemd/user' if user_unit else '/etc/systemd/system'}/"
        f"{unit_name(cfg)}, then: systemctl {'--user ' if user_unit else ''}"
        f"enable --now {unit_name(cfg)}",
        "[Unit]",
        f"Description=procorch stack ({cfg.path})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(_systemd_word(arg) for arg in argv),
        f"WorkingDirectory={str(cfg.path.parent).replace('%', '%%')}",
        "Environment=" + _systemd_word(f"PATH={path_env}"),
    ]
    if user and not user_unit:
        lines.append(f"User={user}")
    lines += [
        "Restart=on-failure",
        "RestartSec=2",
        "KillMode=mixed",
        f"TimeoutStopSec={stop_budget(cfg.services)}",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user_unit else 'multi-user.target'}",
    ]
    return "\n".join(lines) + "\n"


def _procorch_argv() -> list[str]:
    """How this very procorch is run: the venv's script beside its Python, else -m."""
    script = Path(sys.executable).parent / "procorch"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "procorch"]


@app.command()
def systemd(
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    output: OutputOpt = None,
    user_unit: UserOpt = False,
) -> None:
    """A systemd unit that runs this stack at boot (procorch up --foreground)."""
    import pwd

    cfg = _file_config(config, run_dir)
    user = None if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    text = systemd_unit(cfg, _procorch_argv(), os.environ.get("PATH", ""), user, user_unit)
    _emit(text, output, unit_name(cfg))


# == compose ===================================================================================

_RESTART = {"always": "always", "on-failure": "on-failure", "never": "no"}


def _q(text: str) -> str:
    """A YAML scalar: a JSON string, with compose's $ interpolation escaped."""
    return json.dumps(text.replace("$", "$$"))


def _ports(svc: ServiceConfig) -> list[str]:
    """The ports a service is known to serve: its health check's, and its `listen` ones."""
    from urllib.parse import urlsplit

    ports: list[int] = []
    if svc.health and svc.health.tcp:
        ports.append(svc.health.tcp)
    if svc.health and svc.health.http:
        parts = urlsplit(svc.health.http)
        ports.append(parts.port or (443 if parts.scheme == "https" else 80))
    for address in svc.listen:  # `listen` sockets, where configured
        match = re.fullmatch(r"tcp://.*:(\d+)", str(address))
        if match:
            ports.append(int(match[1]))
    # several replicas cannot share a host port: let the engine choose theirs
    return [f"{p}:{p}" if svc.replicas == 1 else str(p) for p in dict.fromkeys(ports)]


def per_replica(svc: ServiceConfig) -> bool:
    """Whether the replicas' commands or environments differ ({replica}, {port}): compose
    runs identical replicas, so such a service cannot be one compose service."""
    if svc.replicas == 1:
        return False
    return svc.argv(0) != svc.argv(1) or svc.environment(0) != svc.environment(1)


def compose_file(
    cfg: Config, env_files: Mapping[Path, Mapping[str, str]]
) -> tuple[str, list[str], list[str]]:
    """The compose file for `cfg`'s command services, the Python services left out, and
    the command services left out because their replicas differ (`per_replica`).
    `env_files`: what each service's `env_file` sets (compose reads it itself)."""
    exported = [svc for svc in cfg.services if svc.command and not per_replica(svc)]
    names = {svc.name for svc in exported}
    lines = [
        f"# procorch export compose: the command services of {cfg.path}.",
        "# Each runs in $PROCORCH_IMAGE (default python:3.12-slim), which must hold the",
        "# programs its command names.",
        "services:",
    ]
    for svc in exported:
        argv = svc.argv(0)  # the same for every replica: placeholders filled, {{ undone
        assert argv is not None
        lines.append(f"  {json.dumps(svc.name)}:")
        lines.append(f"    image: {json.dumps(IMAGE)}")
        lines.append(f"    command: [{', '.join(_q(arg) for arg in argv)}]")
        if svc.cwd:
            lines.append(f"    working_dir: {_q(str(svc.cwd))}")
        if svc.env_file:  # compose reads it where it runs: its values stay out of the file
            lines.append(f"    env_file: [{_q(str(svc.env_file))}]")
        from_file = escape_braces(env_files[svc.env_file]) if svc.env_file else {}
        environment = {
            k: v
            for k, v in svc.environment(0).items()
            if k not in from_file or svc.env[k] != from_file[k]  # else the file gives it
        }
        if environment:
            lines.append("    environment:")
            lines += [f"      {json.dumps(k)}: {_q(v)}" for k, v in environment.items()]
        depends = [d for d in svc.depends_on if d in names]
        if depends:
            lines.append(f"    depends_on: [{', '.join(json.dumps(d) for d in depends)}]")
        ports = _ports(svc)
        if ports:
            lines.append(f"    ports: [{', '.join(json.dumps(p) for p in ports)}]")
        lines += [
            "    deploy:",
            f"      replicas: {svc.replicas}",
            f"    restart: {json.dumps(_RESTART[svc.restart])}",
            f"    stop_signal: {json.dumps(svc.stop_signal.name)}",
            f"    stop_grace_period: {json.dumps(f'{svc.stop_timeout:g}s')}",
        ]
    python = [svc.name for svc in cfg.services if not svc.command]
    differing = [svc.name for svc in cfg.services if svc.command and per_replica(svc)]
    return "\n".join(lines) + "\n", python, differing


@app.command()
def compose(config: ConfigOpt = None, run_dir: RunDirOpt = None, output: OutputOpt = None) -> None:
    """A compose file with one service per command service of this stack."""
    cfg = _file_config(config, run_dir)
    try:
        env_files = {s.env_file: read_env_file(s.env_file) for s in cfg.services if s.env_file}
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    text, python, differing = compose_file(cfg, env_files)
    notes = []
    if python:
        notes.append(_python_services(python))
    if differing:
        notes.append(
            f"{', '.join(differing)} (its replicas' commands or environments differ by "
            "{replica} or {port}; compose runs identical replicas)"
        )
    if len(python) + len(differing) == len(cfg.services):
        fail(f"nothing to export: {'; '.join(notes)}", EXIT_CONFIG)
    for note in notes:
        typer.echo(f"procorch: not exported: {note}", err=True)
    _emit(text, output, "compose.yaml")


def _python_services(names: list[str]) -> str:
    return (
        f"{', '.join(names)} (Python services talk through procorch's run directory: "
        "keep them under `procorch up`)"
    )


# == both =======================================================================================


def _file_config(config: Path | None, run_dir: Path | None) -> Config:
    cfg = load(config, run_dir)
    if cfg.path is None:
        fail("nothing to export without a config file (`procorch init` writes one)", EXIT_CONFIG)
    return cfg


def _emit(text: str, output: Path | None, name: str) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    if not output.is_dir():
        fail(f"--output {output}: not a directory", EXIT_CONFIG)
    path = output / name
    try:
        path.write_text(text)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_CONFIG)
    typer.echo(f"procorch: wrote {path}", err=True)


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="export")
