"""`procorch job ...` and `procorch submit-job`: the job queue from the command line.

Every command goes through the Python API (`Jobs`), straight to the store: none needs
the daemon, and jobs submitted while it is down wait, pending, for workers. The API
(and with it sqlite3 or redis) is imported inside the commands, so other commands
never pay for it. Exit codes: 0 fine, 1 a job error (no such job, already finished,
failed or cancelled while waited for, store unreachable), 2 bad input or config.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from procorch.cli import complete
from procorch.cli.common import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    ConfigOpt,
    JsonOpt,
    RunDirOpt,
    fail,
    load,
)

if TYPE_CHECKING:
    from procorch.jobs.api import Jobs

NO_DAEMON_NEEDED = "Works without the daemon: jobs wait, pending, until the JobWorker service runs."

job_app = typer.Typer(
    help="Submit and follow jobs (registered functions with JSON arguments, or F(n) mod m),"
    " run by the JobWorker service. " + NO_DAEMON_NEEDED,
    no_args_is_help=True,
    rich_markup_mode=None,
)

Numbers = Annotated[
    list[str],
    typer.Argument(
        help="A registered function's name (with --args/--kwargs), or n: integers from 0 to"
        " [jobs] max_n for F(n) mod m.",
        metavar="FUNCTION | N...",
    ),
]
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


def _short(value: Any, width: int = 60) -> str:
    return _cut(json.dumps(value, separators=(", ", ": ")), width)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _call(job: dict[str, Any]) -> str:
    """How a job reads: F(12) mod 1000, or send("a@b", subject="hi")."""
    if job["input"] is not None:
        if job["function"] == "fib":
            return f"F({job['input']}) mod {job['mod']}"
        return f"{job['function']}({job['input']}) mod {job['mod']}"
    from procorch.jobs.job import call_text

    return _cut(call_text(job["function"], job["args"], job["kwargs"]), 40)


def _describe(job: dict[str, Any]) -> str:
    line = f"job {job['job_id']} {job['status']}: {_call(job)}"
    if job["status"] == "done":
        line += f" = {_short(job['result'], 30)}"
    if job["error"] and job["status"] != "done":
        line += f" ({job['error']})"
    return line


def _json_option(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        fail(f"{what} is not JSON: {exc}", EXIT_CONFIG)


def submit(
    numbers: Numbers,
    mod: ModOpt = None,
    function: FunctionOpt = None,
    args: Annotated[
        str | None, typer.Option("--args", help="The function's arguments: a JSON list.")
    ] = None,
    kwargs: Annotated[
        str | None, typer.Option("--kwargs", help="Its keyword arguments: a JSON object.")
    ] = None,
    delay: Annotated[
        str | None, typer.Option("--delay", help='Not before this long from now: "10s", "5m".')
    ] = None,
    at: Annotated[str | None, typer.Option("--at", help="Not before this time (ISO 8601).")] = None,
    priority: Annotated[
        str | None, typer.Option("--priority", help="Higher runs first among due jobs.")
    ] = None,
    depends_on: Annotated[
        list[str] | None,
        typer.Option("--depends-on", help="Run after this job is done (repeatable)."),
    ] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="The queue [default: the function's].")
    ] = None,
    wait: WaitOpt = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            "--key",
            "-k",
            help="Submit once: a retry with the same key (within a day) gets the same ids.",
        ),
    ] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job of a registered function (`submit send --args '[1]'`), or one job of
    F(n) mod m per N (all or none); prints each job's id.

    Works without the daemon: jobs wait, pending, until the JobWorker service runs.
    """
    options = {
        "delay": delay,
        "at": at,
        "priority": priority,
        "depends_on": depends_on,
        "queue": queue,
    }
    from procorch.jobs.api import integer_text

    with _jobs(config, run_dir) as jobs:
        if args is not None or kwargs is not None or not integer_text(numbers[0]):
            if len(numbers) > 1:
                fail("name one function (its arguments go in --args and --kwargs)", EXIT_CONFIG)
            ids = [
                jobs.submit(
                    numbers[0],
                    mod=mod,
                    function=function,
                    key=key,
                    args=_json_option(args, "--args"),
                    kwargs=_json_option(kwargs, "--kwargs"),
                    **options,
                )
            ]
        else:
            ids = jobs.submit_many(numbers, mod=mod, function=function, key=key, **options)
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
        finished = [jobs.wait_job(job_id) for job_id in ids]
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
    """Show one job: function, args, result, progress, every attempt's error, times."""
    with _jobs(config, run_dir) as jobs:
        job = jobs.get(job_id)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    width = max(len(key) for key in job)
    for key, value in job.items():
        if key == "errors":
            for error in value:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(error["at"]))
                typer.echo(
                    f"{key:<{width}}  attempt {error['attempt']} at {when}Z: {error['error']}"
                )
            continue
        if isinstance(value, list | dict):
            value = _short(value, 200)
        typer.echo(f"{key:<{width}}  {'-' if value is None else value}")


_LIST_COLUMNS = ("job_id", "status", "function", "args", "result", "attempts", "finished_time")


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
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="Only jobs of this function.")
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, oldest first: {"jobs": [...], "count": C, "total": T} with --json."""
    with _jobs(config, run_dir) as jobs:
        page = jobs.list(status, limit, offset, function=function, queue=queue)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return

    # each cell encoded once; args and result (`cut`) give way, down to 10 characters,
    # until a row fits the terminal
    cells = [[_list_cell(job, column) for column in _LIST_COLUMNS] for job in page["jobs"]]

    def widths(cap: int) -> list[int]:
        return [
            max([len(c)] + [min(len(r[i][0]), cap) if r[i][1] else len(r[i][0]) for r in cells])
            for i, c in enumerate(_LIST_COLUMNS)
        ]

    def fits(cap: int) -> bool:
        return sum(widths(cap)) + 2 * (len(_LIST_COLUMNS) - 1) <= room

    room = shutil.get_terminal_size().columns
    cap = next((c for c in range(30, 10, -1) if fits(c)), 10)  # widths only: nothing re-encoded
    rows = [[_cut(text, cap) if cut else text for text, cut in row] for row in cells]
    shown = widths(cap)
    for row in [list(_LIST_COLUMNS), *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, shown, strict=True)).rstrip())
    first = int(offset) + 1 if rows else 0
    typer.echo(
        f"{first}-{int(offset) + len(rows)} of {page['total']}" if rows else f"0 of {page['total']}"
    )


def _list_cell(job: dict[str, Any], column: str) -> tuple[str, bool]:
    """A `job list` cell's full text, and whether it may be cut to fit."""
    value = job[column]
    if column in ("args", "result") and (value is not None or column == "args"):
        return json.dumps(value, separators=(", ", ": ")), True
    return ("-" if value is None else str(value)), False


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
            job = jobs.wait_job(job_id, timeout)
        else:
            from rich.console import Console

            with Console(stderr=True).status(f"job {job_id}…") as spinner:

                def show(current: dict[str, Any]) -> None:
                    attempt = f", attempt {current['attempts']}" if current["attempts"] else ""
                    spinner.update(f"job {job_id}: {current['status']}{attempt}")

                job = jobs.wait_job(job_id, timeout, on_change=show)
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


@job_app.command()
def requeue(
    job_id: Annotated[
        str | None,
        typer.Argument(help="A failed job's id.", autocompletion=complete.JOB_IDS),
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Every failed job (the dead letters).")
    ] = False,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put a failed job back (or --failed: all of them), with fresh attempts."""
    if (job_id is None) == (not failed):
        fail("give a job id or --failed", EXIT_CONFIG)
    with _jobs(config, run_dir) as jobs:
        ids = jobs.requeue(None if failed else job_id)
    if as_json:
        _echo_json({"requeued": ids})
    else:
        typer.echo(
            f"requeued {len(ids)} job{'s' * (len(ids) != 1)}"
            + (f": {', '.join(map(str, ids))}" if ids else "")
        )


@job_app.command()
def purge(
    status_: Annotated[str, typer.Option("--status", "-s", help="done, failed or cancelled.")],
    older_than: Annotated[
        str, typer.Option("--older-than", help='Finished longer ago than this: "1d", "12h".')
    ] = "0",
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete finished jobs now (they also go by themselves after their result_ttl)."""
    with _jobs(config, run_dir) as jobs:
        count = jobs.purge(status_, older_than)
    if as_json:
        _echo_json({"purged": count})
    else:
        typer.echo(f"purged {count} job{'s' * (count != 1)}")


@job_app.command()
def work(
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once the queues are empty (else run on).")
    ] = False,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="Take jobs of this queue (repeatable) [default: all]."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=64, help="Processes.")] = 1,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
) -> None:
    """Run job workers in the foreground, without the daemon: with --burst until the
    queues are empty, then exit 0 (1 if any job failed), for batch scripts and CI."""
    from procorch.jobs.api import check_queue
    from procorch.jobs.backend import open_store
    from procorch.jobs.burst import work as run_workers
    from procorch.jobs.job import InvalidJob, JobError

    cfg = load(config, run_dir)
    try:
        queues = [check_queue(q) for q in queue or []]
    except InvalidJob as exc:
        fail(str(exc), EXIT_CONFIG)
    try:
        # once here, so an unreachable store is one line, not a traceback per worker
        open_store(cfg.jobs, cfg.settings.run_dir).close()
        code = run_workers(cfg, queues, workers, burst=burst)
    except JobError as exc:  # StoreUnavailable: before the start, or after the run
        fail(str(exc))
    except KeyboardInterrupt:
        fail("stopped; jobs in hand are taken back by the next worker", EXIT_INTERRUPTED)
    raise typer.Exit(code)


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
