"""The Python interface to the job queue; the `procorch job` commands use it too.

    from procorch import Jobs
    jobs = Jobs.open()                 # as the CLI: -c / --run-dir / ./procorch.toml
    job_id = jobs.submit(100)
    print(jobs.wait(job_id)["output"])  # 687995182

It talks to the store directly, so it works whether or not the daemon runs: jobs
submitted while no worker runs wait, pending, until workers start.
"""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procorch.config import Config, JobsSettings, load_config
from procorch.jobs.backend import open_store
from procorch.jobs.job import (
    CANCELLABLE,
    DEFAULT_FUNCTION,
    FINISHED,
    InvalidJob,
    JobConflict,
    JobError,
    JobNotFound,
    JobTimeout,
    Status,
    StoreFull,
    StoreUnavailable,
    check_integer,
    check_key,
    check_status,
    public,
)
from procorch.jobs.store import Key, Store, Waiter

MAX_LIMIT = 10_000  # one `list` page at most
WAIT_SLICE = 0.5  # a waiting client looks again at least this often, woken or not
THROUGHPUT_EVERY = 0.5  # seconds between two computations of `stats` throughput


class Jobs:
    """A connection to the job queue of one procorch configuration.

    Like the database connection it holds, one `Jobs` serves one thread at a time:
    give each thread (and each process) its own.
    """

    def __init__(self, settings: JobsSettings, run_dir: Path) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self._store: Store = open_store(settings, run_dir)
        self._waiter: Waiter | None = None  # kept between waits: subscribing costs a round trip
        self._throughput: dict[str, float] = {}
        self._throughput_due = 0.0

    @classmethod
    def open(cls, config: Path | None = None, run_dir: Path | None = None) -> Jobs:
        """The queue as the CLI finds it: `config` (else ./procorch.toml, else the built-in
        defaults) and its run directory (`run_dir` wins); the backend from `[jobs]`.
        Raises `procorch.config.ConfigError` for a bad config file."""
        return cls.from_config(load_config(config, run_dir=run_dir))

    @property
    def permanent_ids(self) -> bool:
        """Whether a job id always names the same job (see `Store.permanent_ids`)."""
        return self._store.permanent_ids

    @classmethod
    def from_config(cls, config: Config) -> Jobs:
        return cls(config.jobs, config.settings.run_dir)

    def __enter__(self) -> Jobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
        self._store.close()

    # -- submitting --------------------------------------------------------------------

    def _job(self, n: Any, mod: Any, function: str | None) -> tuple[str, int, int]:
        function = function or DEFAULT_FUNCTION
        if function != DEFAULT_FUNCTION and function not in self.settings.functions:
            known = ", ".join([DEFAULT_FUNCTION, *self.settings.functions])
            raise InvalidJob(f"unknown job function {function!r} (known: {known})")
        n = check_integer(n, "n", 0, self.settings.max_n)
        mod = self.settings.mod if mod is None else check_integer(mod, "mod", 2, 2**63 - 1)
        return function, n, mod

    def submit(
        self,
        n: int,
        mod: int | None = None,
        function: str | None = None,
        key: str | None = None,
    ) -> int:
        """Enqueue F(n) mod `mod` (default: the config's `mod`); the new job's id.

        With an idempotency `key`, a retry (the same key and job, within a day) returns
        the first submission's id and enqueues nothing; the key with another job is
        JobConflict.
        """
        return self.submit_many([n], mod, function, key)[0]

    def submit_many(
        self,
        ns: builtins.list[int],
        mod: int | None = None,
        function: str | None = None,
        key: str | None = None,
    ) -> builtins.list[int]:
        """Enqueue one job per n in one transaction (all or none); their ids, in order.
        A `key` makes the whole submission idempotent, as for `submit`."""
        jobs = [self._job(n, mod, function) for n in ns]
        if not jobs:
            return []
        keyed = None if key is None else Key.of(check_key(key), jobs)
        return self._store.submit_many(jobs, keyed)

    # -- looking -----------------------------------------------------------------------

    def _record(self, job_id: Any) -> dict[str, Any]:
        job_id = check_integer(job_id, "job id", 1, 2**63 - 1)
        record = self._store.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def get(self, job_id: int) -> dict[str, Any]:
        """The job: job_id, status, function, input, mod, output, error, attempts,
        init_time, started_time, finished_time (ISO 8601 UTC), worker."""
        return public(self._record(job_id))

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """{"jobs": [...], "count": C, "total": T}: a page of jobs by id, T matching in all."""
        wanted = check_status(status)
        limit = check_integer(limit, "limit", 0, MAX_LIMIT)
        offset = check_integer(offset, "offset", 0, 2**63 - 1)
        records, total = self._store.list(wanted, limit, offset)
        jobs = [public(r) for r in records]
        return {"jobs": jobs, "count": len(jobs), "total": total}

    def wait(
        self,
        job_id: int,
        timeout: float | None = None,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the job is done, failed or cancelled; the job then.

        Raises `JobTimeout` after `timeout` seconds. Workers wake waiters as jobs
        finish, so this returns within a millisecond or so of the job's end.
        `on_change(job)` is called whenever the job's status or attempts change.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._waiter is None:
            self._waiter = self._store.waiter()  # before the first look: no finish goes unheard
        seen = None
        record = self._record(job_id)
        while True:
            if on_change is not None and (record["status"], record["attempts"]) != seen:
                seen = (record["status"], record["attempts"])
                on_change(public(record))
            if record["status"] in FINISHED:
                return public(record)
            left = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise JobTimeout(f"job {job_id} is still {record['status']} after {timeout}s")
            heard = self._waiter.wait(min(left, WAIT_SLICE)).get(record["job_id"])
            # the announced job, if it is this one (not a namesake from a flushed Redis)
            if heard is not None and heard["init_time"] == record["init_time"]:
                record = heard
            else:
                record = self._record(job_id)

    def cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel a pending or running job (a running job's result will be dropped).

        Raises `JobConflict` if the job has finished already."""
        before = self._record(job_id)
        if before["status"] not in CANCELLABLE:
            raise JobConflict(f"job {before['job_id']} is already {before['status']}")
        after = self._store.cancel(before["job_id"])
        assert after is not None
        if after["status"] != Status.CANCELLED:  # it finished meanwhile
            raise JobConflict(f"job {after['job_id']} is already {after['status']}")
        return public(after)

    def stats(self) -> dict[str, Any]:
        """Counts per status (exact), the total, and throughput: jobs finished (done or
        failed) per second over the last 10 and 60 s, recomputed at most every
        THROUGHPUT_EVERY s, so that polling `stats` stays cheap. `durations` is how long
        finished jobs ran, a histogram the store keeps as they finish: {"buckets":
        [[upper bound s, jobs that ran at most that long], ..., ["+Inf", count]], "count":
        jobs, "sum": seconds} (JSON has no infinity: the last bound is the string)."""
        counts = {status.value: 0 for status in Status}
        counts.update(self._store.counts())
        now = time.time()
        if now >= self._throughput_due:
            self._throughput_due = now + THROUGHPUT_EVERY
            self._throughput = {
                f"last_{window}s": round(self._store.finished_since(now - window) / window, 2)
                for window in (10, 60)
            }
        durations = self._store.durations()
        return {
            "counts": counts,
            "total": sum(counts.values()),
            "throughput": self._throughput,
            "durations": {
                "buckets": [
                    ["+Inf" if math.isinf(bound) else bound, count]
                    for bound, count in durations.buckets
                ],
                "count": durations.count,
                "sum": durations.sum,
            },
            "backend": "sqlite" if self.settings.redis_url is None else "redis",
        }


# -- module-level conveniences: one call, one short-lived connection -----------------


def submit(
    n: int, mod: int | None = None, *, key: str | None = None, config: Path | None = None
) -> int:
    with Jobs.open(config) as jobs:
        return jobs.submit(n, mod, key=key)


def get_job(job_id: int, *, config: Path | None = None) -> dict[str, Any]:
    with Jobs.open(config) as jobs:
        return jobs.get(job_id)


def list_jobs(
    status: str | None = None, limit: int = 50, offset: int = 0, *, config: Path | None = None
) -> dict[str, Any]:
    with Jobs.open(config) as jobs:
        return jobs.list(status, limit, offset)


def wait_job(
    job_id: int, timeout: float | None = None, *, config: Path | None = None
) -> dict[str, Any]:
    with Jobs.open(config) as jobs:
        return jobs.wait(job_id, timeout)


def cancel_job(job_id: int, *, config: Path | None = None) -> dict[str, Any]:
    with Jobs.open(config) as jobs:
        return jobs.cancel(job_id)


__all__ = [
    "InvalidJob",
    "JobError",
    "JobNotFound",
    "JobTimeout",
    "Jobs",
    "StoreFull",
    "StoreUnavailable",
    "cancel_job",
    "get_job",
    "list_jobs",
    "submit",
    "wait_job",
]
