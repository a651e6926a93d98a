"""Live operations on a running stack: reload (the config file again) and scale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from procorch.cli import complete
from procorch.cli.common import (
    EXIT_CONFIG,
    EXIT_DAEMON_DOWN,
    EXIT_OK,
    ConfigOpt,
    JsonOpt,
    RunDirOpt,
    fail,
    load,
    refuse_broken_imports,
    request,
    show,
    status_code,
    wait_settled,
)
from procorch.config import Config, ConfigError

SaveOpt = Annotated[
    bool, typer.Option("--save", help="Also write the new counts into the config file.")
]


def reload(
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan only; change nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read the config again and apply the difference live: added services start,
    removed ones stop, changed ones are replaced (rolling when they have several
    replicas), unchanged ones are not touched. Same as SIGHUP to the daemon."""
    cfg = load(config, run_dir)
    new = like_running(cfg, run_dir)
    raise typer.Exit(apply_reload(new, config, dry_run, as_json))


def like_running(
    cfg: Config, run_dir: Path | None, gateway: bool = False, token: bool = False
) -> Config:
    """`cfg`'s file as the running daemon should run it:
    `--gateway`/`--token` given to it before, or now (`gateway`, `token`), still hold."""
    from procorch.config import load_like

    running = Config.from_json(json.dumps(request(cfg, {"cmd": "config"})["config"]))
    try:
        new = load_like(running, cfg.path, run_dir, gateway=gateway, token=token, loaded=cfg)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    return new


def apply_reload(
    new: Config, config: Path | None, dry_run: bool, as_json: bool, imports_checked: bool = False
) -> int:
    """Show the plan from the running daemon's config to `new` (from `like_running`) and,
    unless `dry_run`, carry it out; returns the exit code. (`up --reload` uses it too,
    its imports checked already.)"""
    from procorch.supervisor.reloadplan import Plan, describe

    wanted = json.loads(new.to_json())
    answer = request(new, {"cmd": "reload", "config": wanted, "dry_run": True})
    plan = Plan.from_json(answer["plan"])
    if not as_json:
        for line in describe(plan):
            typer.echo(line)
    if plan.refused:
        if as_json:
            typer.echo(json.dumps({"plan": answer["plan"], "applied": False}, indent=2))
        what = ", ".join(plan.refused)
        fail(
            f"nothing changed: {what} cannot change live (`procorch down`, then `up`)", EXIT_CONFIG
        )
    if dry_run or plan.empty:
        if as_json:
            typer.echo(json.dumps(answer, indent=2))
        elif plan.empty:
            typer.echo("nothing to change: the daemon runs this config")
        return EXIT_OK
    if not imports_checked:
        refuse_broken_imports(new, config)
    result = wait_settled(new, {"cmd": "reload", "config": wanted}, "reloading", quiet=as_json)
    return report(result, as_json)


def report(result: dict[str, Any], as_json: bool) -> int:
    """The services concerned as they are now, and any replacement that failed."""
    failures = result.get("failures", [])
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        if result["services"]:
            show(result, as_json=False)
        for failure in failures:
            typer.echo(f"procorch: rollout aborted, old replicas kept: {failure}", err=True)
    return EXIT_DAEMON_DOWN if failures else status_code(result)


def scale(
    counts: Annotated[
        list[str],
        typer.Argument(
            help="NAME=N for each service to scale.",
            metavar="NAME=N...",
            autocompletion=complete.SERVICES,
        ),
    ],
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    save: SaveOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Add or remove replicas live: replicas 0..N-1 keep running untouched, the
    highest-numbered ones stop gracefully. Lasts until the next reload, or --save."""
    wanted = _parse_counts(counts)
    cfg = load(config, run_dir)
    edited = _saved_text(cfg, wanted) if save else None  # a file we cannot edit: no change
    result = wait_settled(cfg, {"cmd": "scale", "counts": wanted}, "scaling", quiet=as_json)
    scaled: dict[str, int] = result.get("scaled", wanted)
    if edited is not None:
        assert cfg.path is not None
        _write(cfg.path, edited)
    code = report(result, as_json)
    if not as_json:
        where = cfg.path.name if cfg.path else "the config file"
        lasts = f"saved in {where}" if save else f"until the next reload (--save writes {where})"
        for name, n in scaled.items():
            typer.echo(f"{name}: {n} replicas, {lasts}", err=True)
    raise typer.Exit(code)


def _parse_counts(counts: list[str]) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for item in counts:
        name, sep, number = item.partition("=")
        if not sep or not name or not number.isascii() or not number.isdigit():
            fail(f"expected NAME=N (a service and a number of replicas), got {item!r}", EXIT_CONFIG)
        if not 1 <= int(number) <= 1000:
            fail(f"{name}: replicas must be 1 to 1000, got {number}", EXIT_CONFIG)
        wanted[name] = int(number)
    return wanted


def _saved_text(cfg: Config, wanted: dict[str, int]) -> str:
    """The config file with the new counts, checked by loading it; exit 2 if it cannot be."""
    from procorch.tomledit import EditError, set_replicas

    if cfg.path is None:
        fail("--save needs a config file (none was found: the built-in stack runs)", EXIT_CONFIG)
    try:
        text = cfg.path.read_text()
        for name, n in wanted.items():
            text = set_replicas(text, cfg.service(name).name, n)
    except KeyError as exc:
        fail(f"no service named {exc.args[0]!r} in {cfg.path}", EXIT_CONFIG)
    except (EditError, OSError) as exc:
        fail(f"cannot save to {cfg.path}: {exc}", EXIT_CONFIG)
    _check_saved(cfg, text, wanted)
    return text


def _check_saved(cfg: Config, text: str, wanted: dict[str, int]) -> None:
    """What would be written must load, with exactly the new counts."""
    import tomllib

    assert cfg.path is not None
    try:
        services = tomllib.loads(text).get("services", {})
        ok = all(
            services[cfg.service(name).name].get("replicas") == n for name, n in wanted.items()
        )
    except (tomllib.TOMLDecodeError, KeyError, AttributeError):
        ok = False
    if not ok:
        _refuse_save(cfg.path)


def _refuse_save(path: Path) -> NoReturn:
    fail(f"cannot save to {path}: set `replicas` there by hand (nothing was changed)", EXIT_CONFIG)


def _write(path: Path, text: str) -> None:
    """Replace the file at once, keeping its mode: an editor or `reload` never reads half."""
    from procorch.supervisor.rundir import write_atomic

    try:
        write_atomic(path, text, mode=path.stat().st_mode & 0o7777)
    except OSError as exc:
        fail(f"scaled, but cannot write {path}: {exc.strerror or exc}")


def register(app: typer.Typer) -> None:
    for command in (reload, scale):
        app.command()(command)
