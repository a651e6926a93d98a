"""`procorch job ...` and `procorch submit-job`: the job queue from the command line.

Every command goes through the Python API (`Jobs`), straight to the store: none needs
the daemon, and jobs submitted while it is down wait, pending, for workers. The API
(and with it sqlite3 or redis) is imported inside the commands, so other commands
never pay for it. Exit codes: 0 fine, 1 a job error (no such job, already finished,
failed or cancelled while waited for, store unreachable), 2 bad input or config.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from procorch.cli import complete
from procorch.cli.common import EXIT_CONFIG, EXIT_INTERRUPTED, ConfigOpt, JsonOpt, RunDirOpt, fail

if TYPE_CHECKING:
    from procorch.jobs.api import Jobs

NO_DAEMON_NEEDED = "Works without the daemon: jobs wait, pending, until the JobWorker service runs."

job_app = typer.Typer(
    help="Submit and follow jobs: F(n) mod m, run by the JobWorker service. " + NO_DAEMON_NEEDED,
    no_args_is_help=True,
    rich_markup_mode=None,
)

Numbers = Annotated[list[str], typer.Argument(help="n: integers from 0 to [jobs] max_n.")]
JobId = Annotated[str, typer.Argument(help="The job's id.", autocompletion=complete.JOB_IDS)]
OpenJobId = Annotated[  # a pending or running job: the only ones to wait for or cancel
    str, typer.Argument(help="The job's id.", autocompletion=complete.OPEN_JOB_IDS)
]
ModOpt = Annotated[
    str | None, typer.Option("--mod", "-m", help="The modulus m (≥ 2) [default: [jobs] mod].")
]
FunctionOpt = Annotated[
    str | None,
    typer.Option("--function", help="A job function named in [jobs.functions] [default: fib]."),
]
WaitOpt = Annotated[bool, typer.Option("--wait", "-w", help="Wait until the jobs finish.")]


@contextmanager
def _jobs(config: Path | None, run_dir: Path | None) -> Iterator[Jobs]:
    """The queue for a command; any error a user can cause ends it with one line."""
    from procorch.config import ConfigError
    from procorch.jobs.api import Jobs
    from procorch.jobs.job import InvalidJob, JobError

    try:
        with Jobs.open(config, run_dir) as jobs:
            yield jobs
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except InvalidJob as exc:
        fail(str(exc), EXIT_CONFIG)
    except JobError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # only a wait lasts long enough to be interrupted
        fail("stopped waiting; the jobs stay queued or running", EXIT_INTERRUPTED)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value))


def _describe(job: dict[str, Any]) -> str:
    what = f"{job['function']}({job['input']}) mod {job['mod']}"
    if job["function"] == "fib":
        what = f"F({job['input']}) mod {job['mod']}"
    line = f"job {job['job_id']} {job['status']}: {what}"
    if job["status"] == "done":
        line += f" = {job['output']}"
    if job["error"] and job["status"] != "done":
        line += f" ({job['error']})"
    return line


def submit(
    numbers: Numbers,
    mod: ModOpt = None,
    function: FunctionOpt = None,
    wait: WaitOpt = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            "-k",
            help="Submit once: a retry with the same key (within a day) gets the same ids.",
        ),
    ] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit one job per N (all or none); prints each job's id.

    Works without the daemon: jobs wait, pending, until the JobWorker service runs.
    """
    with _jobs(config, run_dir) as jobs:
        ids = jobs.submit_many(numbers, mod=mod, function=function, key=key)
        if not wait:
            for job_id in ids:
                if as_json:
                    _echo_json({"status": "taken", "job_id": job_id})
                else:
                    typer.echo(f"job {job_id} taken")
            return
        # The ids at once, on stderr: stdout keeps one line per finished job, for scripts.
        typer.echo(f"job{'s' * (len(ids) > 1)} {', '.join(map(str, ids))} taken", err=True)
        _say_if_no_worker(jobs.run_dir)
        finished = [jobs.wait(job_id) for job_id in ids]
    for job in finished:
        _echo_json(job) if as_json else typer.echo(_describe(job))
    raise typer.Exit(0 if all(job["status"] == "done" for job in finished) else 1)


def _say_if_no_worker(run_dir: Path) -> None:
    """Before a wait that could last forever: say so when no worker runs here."""
    from procorch.cli.common import ask
    from procorch.config import JOB_WORKER_NAME

    status = ask(run_dir, {"cmd": "status"})
    if status is None:
        why = "procorch is not running here (`procorch up` starts the workers)"
    else:
        workers = [s for s in status["services"] if s["name"] == JOB_WORKER_NAME]
        if any(s["state"] in ("running", "starting", "backoff") for s in workers):
            return
        why = "no JobWorker is running (`procorch status` shows why)"
    typer.echo(f"procorch: {why}; waiting: the jobs stay queued, Ctrl-C stops waiting", err=True)


# A negative n reads like an option to Click: let it through, so it gets the one-line
# "must be ≥ 0" every other bad n gets.
_NUMBERS_MAY_LOOK_LIKE_OPTIONS = {"ignore_unknown_options": True}

job_app.command("submit", context_settings=_NUMBERS_MAY_LOOK_LIKE_OPTIONS)(submit)


@job_app.command()
def status(
    job_id: JobId, config: ConfigOpt = None, run_dir: RunDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one job: status, input, mod, output, error, attempts, times, worker."""
    with _jobs(config, run_dir) as jobs:
        job = jobs.get(job_id)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    width = max(len(key) for key in job)
    for key, value in job.items():
        typer.echo(f"{key:<{width}}  {'-' if value is None else value}")


_LIST_COLUMNS = ("job_id", "status", "input", "mod", "output", "attempts", "finished_time")


@job_app.command("list")
def list_(
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            help="Only jobs in this state: pending, running, done, failed, cancelled.",
        ),
    ] = None,
    limit: Annotated[str, typer.Option("--limit", "-l", help="At most this many jobs.")] = "50",
    offset: Annotated[str, typer.Option("--offset", "-o", help="Skip this many first.")] = "0",
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, oldest first: {"jobs": [...], "count": C, "total": T} with --json."""
    with _jobs(config, run_dir) as jobs:
        page = jobs.list(status, limit, offset)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    rows = [
        [("-" if job[c] is None else str(job[c])) for c in _LIST_COLUMNS] for job in page["jobs"]
    ]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(_LIST_COLUMNS)]
    for row in [list(_LIST_COLUMNS), *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    first = int(offset) + 1 if rows else 0
    typer.echo(
        f"{first}-{int(offset) + len(rows)} of {page['total']}" if rows else f"0 of {page['total']}"
    )


@job_app.command()
def wait(
    job_id: OpenJobId,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", "-t", min=0, help="Give up after this many seconds."),
    ] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wait until a job is done, failed or cancelled, showing its progress.

    Exit code 0 if it is done, 1 if it failed, was cancelled or the timeout passed.
    """
    with _jobs(config, run_dir) as jobs:
        if as_json or not sys.stderr.isatty():
            job = jobs.wait(job_id, timeout)
        else:
            from rich.console import Console

            with Console(stderr=True).status(f"job {job_id}…") as spinner:

                def show(current: dict[str, Any]) -> None:
                    attempt = f", attempt {current['attempts']}" if current["attempts"] else ""
                    spinner.update(f"job {job_id}: {current['status']}{attempt}")

                job = jobs.wait(job_id, timeout, on_change=show)
    typer.echo(json.dumps(job, indent=2) if as_json else _describe(job))
    raise typer.Exit(0 if job["status"] == "done" else 1)


@job_app.command()
def cancel(
    job_id: OpenJobId, config: ConfigOpt = None, run_dir: RunDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel a pending or running job (a running job's result is dropped)."""
    with _jobs(config, run_dir) as jobs:
        job = jobs.cancel(job_id)
    typer.echo(json.dumps(job, indent=2) if as_json else _describe(job))


@job_app.command()
def stats(config: ConfigOpt = None, run_dir: RunDirOpt = None, as_json: JsonOpt = False) -> None:
    """Counts per status, throughput (jobs finished per second) and how long jobs ran."""
    with _jobs(config, run_dir) as jobs:
        result = jobs.stats()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for name, count in result["counts"].items():
        typer.echo(f"{name:<10} {count}")
    typer.echo(f"{'total':<10} {result['total']}")
    for window, rate in result["throughput"].items():
        typer.echo(f"throughput ({window.removeprefix('last_')}): {rate:g} jobs/s")
    durations = result["durations"]
    if durations["count"]:
        mean = durations["sum"] / durations["count"]
        typer.echo(f"duration: {durations['count']} finished jobs ran {mean:.3g} s on average")


def register(app: typer.Typer) -> None:
    """Add `job ...` and the `submit-job` alias to the main command line."""
    app.add_typer(job_app, name="job")
    from procorch.cli.schedules import schedules  # a module of its own, registered here

    job_app.command("schedules")(schedules)
    app.command(
        "submit-job",
        help="Same as `procorch job submit`. " + NO_DAEMON_NEEDED,
        context_settings=_NUMBERS_MAY_LOOK_LIKE_OPTIONS,
    )(submit)
