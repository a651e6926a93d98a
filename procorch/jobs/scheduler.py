"""The daemon's scheduler: a thread that submits each `[jobs.schedules]` tick as a job.

The daemon starts it (only when schedules exist) and stops it; the thread sleeps until
the next tick, so it never holds up the daemon's event loop. It tells the daemon what
happened through `reports()`, readable on `fileno()`, so the daemon writes the events
from its own thread.

Exactly once: each tick is submitted under its idempotency key (`schedule:NAME:EPOCH`),
so the same tick submitted again (after a kill -9 between the submission and the note
below, or by another daemon on the same Redis queue) is the same job. The run
directory's `schedules.json` notes, per schedule, the time up to which every tick was
fired or counted as missed: a daemon that starts again catches up from there
(schedule.plan), and its first start fires nothing from the past.

A store that refuses (down, full) is reported and retried with backoff; the tick
stays due meanwhile, so it fires late rather than never (or is counted as missed once
a later tick is due).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from procorch.config import Config, JobsSettings
from procorch.jobs.schedule import CATCH_UP, Schedule, plan

if TYPE_CHECKING:
    from procorch.jobs.api import Jobs

STATE_FILE = "schedules.json"  # in the run directory
RETRY_MIN, RETRY_MAX = 0.5, 30.0  # seconds between attempts while the store refuses
MAX_SLEEP = 60.0  # look at the wall clock at least this often: it may have been set
STOP_WAIT = 2.0  # seconds `stop` waits for a submission under way to end
LATE = 1.0  # a tick submitted more than this many seconds after its time says so


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def read_state(run_dir: Path) -> dict[str, dict[str, Any]]:
    """schedules.json: NAME -> {done_until, tick, job_id}; empty if absent or unreadable
    (then no past tick is caught up: the same as a first start)."""
    try:
        state = json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    return {
        name: note
        for name, note in state.items()
        if isinstance(note, dict) and isinstance(note.get("done_until"), int | float)
    }


def listing(config: Config, now: float) -> list[dict[str, Any]]:
    """Each `[jobs.schedules]` entry as `job schedules --json` and the dashboard show it:
    what it submits, how it fires, its next tick after `now` and the last one fired."""
    fired = read_state(config.settings.run_dir)
    rows = []
    for name, table in config.jobs.schedules.items():
        schedule = Schedule.of(name, table)
        note = fired.get(name, {})
        last = note.get("tick")
        rows.append(
            {
                "name": name,
                "function": schedule.function,
                "args": list(schedule.args),
                "kwargs": dict(schedule.kwargs),
                "cron": schedule.cron,
                "every": schedule.every,
                "timezone": schedule.timezone,
                "spec": schedule.spec,  # how it fires, for people: "every 30s"
                "next": iso(schedule.next_after(now)),
                "last": None if last is None else iso(last),
                "last_job_id": note.get("job_id") if last is not None else None,
            }
        )
    return rows


def _write_state(run_dir: Path, state: dict[str, dict[str, Any]]) -> None:
    # Not fsynced: it must survive a process's death, which the page cache does; after
    # a power loss an older note only makes a tick be submitted again, under its key.
    path = run_dir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)


def _submit(jobs: Jobs, schedule: Schedule, key: str) -> int:
    """The one call that enqueues a tick's job."""
    args, kwargs = list(schedule.args), dict(schedule.kwargs)
    return jobs.submit(schedule.function, args=args, kwargs=kwargs, key=key)


class Scheduler:
    """The schedules of one config, fired from a thread of their own."""

    def __init__(self, settings: JobsSettings, run_dir: Path, base: Path | None = None) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.base = base  # where `[jobs] modules` are found, as `Jobs` has it
        self.schedules = [Schedule.of(name, table) for name, table in settings.schedules.items()]
        self._reports: deque[tuple[str, str]] = deque()
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._jobs: Jobs | None = None

    @classmethod
    def from_config(cls, config: Config) -> Scheduler:
        """The config's schedules, submitted as `Jobs.from_config` would: its functions
        found beside the config whatever the daemon's cwd."""
        from procorch.jobs.functions import modules_base

        return cls(config.jobs, config.settings.run_dir, modules_base(config))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(STOP_WAIT)

    def fileno(self) -> int:
        """Readable when reports wait."""
        return self._read

    def reports(self) -> list[tuple[str, str]]:
        """(event, detail) pairs since the last call, oldest first."""
        try:
            os.read(self._read, 4096)
        except BlockingIOError:
            pass
        found = []
        while self._reports:
            found.append(self._reports.popleft())
        return found

    def _report(self, event: str, detail: str) -> None:
        from procorch.redaction import scrub

        url = self.settings.redis_url
        self._reports.append((event, detail if url is None else scrub(detail, url)))
        try:
            os.write(self._write, b"s")
        except BlockingIOError:  # the daemon has a byte to read already
            pass

    # -- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        now = time.time()
        state = read_state(self.run_dir)
        self._state = {s.name: state.get(s.name, {"done_until": now}) for s in self.schedules}
        saved: dict[str, dict[str, Any]] = {}
        retry = RETRY_MIN
        while not self._stopping.is_set():
            try:
                for schedule in self.schedules:
                    self._fire_due(schedule, time.time())
                if self._state != saved:
                    _write_state(self.run_dir, self._state)
                    saved = {name: dict(note) for name, note in self._state.items()}
                retry = RETRY_MIN
            except Exception as exc:  # the store's, or any other: never the daemon's end
                from procorch.jobs.job import JobError

                why = str(exc) if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}"
                self._report("schedule-error", f"{why}; trying again in {retry:g}s")
                self._close()
                self._stopping.wait(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            self._stopping.wait(self._sleep(time.time()))
        self._close()

    def _fire_due(self, schedule: Schedule, now: float) -> None:
        note = self._state[schedule.name]
        decision = plan(schedule, note["done_until"], now)
        if decision.fire is not None:
            key = schedule.key(decision.fire)
            job_id = self._submit(schedule, key)
            if job_id is not None:
                late = now - decision.fire
                detail = f"{schedule.name}: tick {iso(decision.fire)} ({key}): job {job_id}"
                late_by = f", {late:.1f}s late" if late > LATE else ""
                self._report("schedule-fired", detail + late_by)
                note = {"done_until": decision.done_until, "tick": decision.fire, "job_id": job_id}
        if decision.missed:
            missed = f"{schedule.name}: {decision.missed} tick(s) missed"
            if decision.fire is None:
                why = f" up to {iso(decision.done_until)}, too old to run (> {CATCH_UP}s ago)"
            else:
                why = f" before {iso(decision.fire)}, the latest, which ran instead"
            self._report("schedule-missed", missed + why)
        if decision.done_until != note["done_until"]:
            note = {**note, "done_until": decision.done_until}
        self._state[schedule.name] = note

    def _submit(self, schedule: Schedule, key: str) -> int | None:
        """The tick's job id; None for a tick that can never be submitted (reported)."""
        from procorch.jobs.api import Jobs
        from procorch.jobs.job import InvalidJob, JobConflict

        if self._jobs is None:
            self._jobs = Jobs(self.settings, self.run_dir, self.base)
        try:
            return _submit(self._jobs, schedule, key)
        except JobConflict:
            # the key holds other arguments: another daemon, with another config, fired it
            self._report("schedule-error", f"{schedule.name}: {key} was fired with other jobs")
        except InvalidJob as exc:  # never valid, so never retried
            self._report("schedule-error", f"{schedule.name}: {key} cannot be submitted: {exc}")
        return None

    def _sleep(self, now: float) -> float:
        done = self._state
        wake = min(s.next_after(max(done[s.name]["done_until"], now)) for s in self.schedules)
        return min(max(0.0, wake - now), MAX_SLEEP)

    def _close(self) -> None:
        if self._jobs is not None:
            jobs, self._jobs = self._jobs, None
            try:
                jobs.close()
            except Exception:
                pass
