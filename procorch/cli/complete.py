"""Shell completion: service names and job ids for the arguments that take them.

It runs on every <Tab>, so it asks no daemon: service names come from the run
directory's state.json (what the stack runs, or ran last), or from the config if it
never ran; job ids from the job store, imported only when a job id is completed.
Anything wrong (a broken config, no run directory) completes nothing, silently:
a <Tab> must never print an error into the user's command line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from procorch.cli.common import recorded_replicas
from procorch.config import Config, ConfigError, load_config

NEWEST_JOBS = 50  # the newest this many jobs are offered (a queue can hold millions)
# Whether this run completes a word: the shell sets _PROCORCH_COMPLETE (how click asks).
COMPLETING = any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ)


def _config(ctx: typer.Context) -> Config | None:
    """The config the command being completed would use (its -c and --run-dir so far)."""
    params: dict[str, Any] = ctx.params
    try:
        return load_config(params.get("config"), run_dir=params.get("run_dir"))
    except (ConfigError, OSError):
        return None


def services(ctx: typer.Context, incomplete: str) -> list[str]:
    """The stack's service names."""
    cfg = _config(ctx)
    if cfg is None:
        return []
    names = dict.fromkeys(name for name, _ in recorded_replicas(cfg))
    return [name for name in names if name.startswith(incomplete)]


def services_and_replicas(ctx: typer.Context, incomplete: str) -> list[str]:
    """The stack's service names, and `name.N` for each replica of those that have several."""
    cfg = _config(ctx)
    if cfg is None:
        return []
    replicas = recorded_replicas(cfg)
    counts: dict[str, int] = {}
    for name, _ in replicas:
        counts[name] = counts.get(name, 0) + 1
    words = list(counts) + [f"{name}.{i}" for name, i in replicas if counts[name] > 1]
    return [word for word in words if word.startswith(incomplete)]


def job_ids(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """The newest jobs' ids, each with what it is (shells that show help show it)."""
    return _jobs(ctx, incomplete, statuses=(None,))


def unfinished_job_ids(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """The ids of pending and running jobs: the only ones to wait for or cancel."""
    return _jobs(ctx, incomplete, statuses=("pending", "running"))


def _jobs(
    ctx: typer.Context, incomplete: str, statuses: tuple[str | None, ...]
) -> list[tuple[str, str]]:
    cfg = _config(ctx)
    if cfg is None:
        return []
    if cfg.jobs.redis_url is None and not Path(cfg.settings.run_dir).is_dir():
        return []  # never ran here: opening the store would create it
    from procorch.jobs.api import Jobs
    from procorch.jobs.job import JobError

    found: list[dict[str, Any]] = []
    try:
        with Jobs.from_config(cfg) as jobs:
            for status in statuses:
                total = jobs.list(status, 0, 0)["total"]
                found += jobs.list(status, NEWEST_JOBS, max(0, total - NEWEST_JOBS))["jobs"]
    except (JobError, OSError):
        return []
    found.sort(key=lambda job: -job["job_id"])  # the newest first
    return [
        (str(job["job_id"]), f"{job['status']}: {job['function']}({job['input']})")
        for job in found
        if str(job["job_id"]).startswith(incomplete)
    ][:NEWEST_JOBS]


def _offered(completer: Callable[..., list[Any]]) -> Callable[..., list[Any]] | None:
    return completer if COMPLETING else None


# What the argument declarations pass as `autocompletion=`. Typer inspects every
# completer while it builds the commands, on every run (~1 ms for all of them, of the
# ~80 ms of `status`); a run that completes no word never calls one, so it gets none.
SERVICES = _offered(services)
SERVICES_AND_REPLICAS = _offered(services_and_replicas)
JOB_IDS = _offered(job_ids)
OPEN_JOB_IDS = _offered(unfinished_job_ids)
