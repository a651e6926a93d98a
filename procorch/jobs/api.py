"""The Python interface to the job queue; the `procorch job` commands use it too.

    from procorch import Jobs
    jobs = Jobs.open()                 # as the CLI: -c / --run-dir / ./procorch.toml
    job_id = jobs.submit(100)
    print(jobs.wait(job_id))           # 687995182: the result, or JobFailed with its error
    job_id = jobs.submit("send", args=["a@example.com"], kwargs={"subject": "hi"}, delay=10)
    print(jobs.wait_job(job_id))       # the whole job once it has finished, however it ended

It talks to the store directly, so it works whether or not the daemon runs: jobs
submitted while no worker runs wait, pending, until workers start.
"""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from procorch.config import (
    MAX_INT64,
    MAX_PRIORITY,
    QUEUE_NAME,
    Config,
    JobsSettings,
    load_config,
)
from procorch.jobs.backend import open_store
from procorch.jobs.functions import Registry, modules_base, seconds
from procorch.jobs.job import (
    CANCELLABLE,
    DEFAULT_FUNCTION,
    DEFAULT_QUEUE,
    FINISHED,
    MAX_PAYLOAD,
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
    encoded,
    public,
    shown,
)
from procorch.jobs.store import Key, NewJob, Store, Waiter

MAX_LIMIT = 10_000  # one `list` page at most
WAIT_SLICE = 0.5  # a waiting client looks again at least this often, woken or not
THROUGHPUT_EVERY = 0.5  # seconds between two computations of `stats` throughput
MAX_DELAY = 10 * 365 * 86400.0  # seconds: a job due later than this is a mistake
LATEST = 253402300799.0  # 9999-12-31T23:59:59Z, the last time ISO 8601 shows


class JobFailed(JobError):
    """`wait` found the job failed or cancelled; str() says why."""

    def __init__(self, job: dict[str, Any]) -> None:
        why = job["error"] or job["status"]
        super().__init__(f"job {job['job_id']} {job['status']}: {why}")
        self.job = job


class Jobs:
    """A connection to the job queue of one procorch configuration.

    Like the database connection it holds, one `Jobs` serves one thread at a time:
    give each thread (and each process) its own.
    """

    def __init__(self, settings: JobsSettings, run_dir: Path, base: Path | None = None) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.registry = Registry(settings, base)
        # the default policy puts a job in the default queue at priority 0: NewJob's own
        self._plain = (settings.priority, settings.queue) == (0, DEFAULT_QUEUE)
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
        return cls(config.jobs, config.settings.run_dir, modules_base(config))

    def __enter__(self) -> Jobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
        self._store.close()

    # -- submitting --------------------------------------------------------------------

    def _fib(self, n: Any, mod: Any, function: str | None, **options: Any) -> NewJob:
        """A Fibonacci-shaped job: the built-in F(n) mod m, or a configured f(n, mod)."""
        function = self.registry.known(function or DEFAULT_FUNCTION)
        n = check_integer(n, "n", 0, self.settings.max_n)
        mod = self.settings.mod if mod is None else check_integer(mod, "mod", 2, MAX_INT64)
        if self._plain and not any(options.values()) and function == DEFAULT_FUNCTION:
            return NewJob(function, n, mod)  # the hot path: nothing to look up
        return self._with_options(NewJob(function, n, mod), **options)

    def _with_options(
        self,
        job: NewJob,
        delay: Any = None,
        at: Any = None,
        priority: Any = None,
        depends_on: Any = None,
        queue: Any = None,
    ) -> NewJob:
        """The job with its function's policy and the submission's options, checked."""
        policy = self.registry.policy(job.function)
        changes: dict[str, Any] = {}
        defaults = self.registry.policy(DEFAULT_FUNCTION)  # [jobs]'s
        if policy is not defaults:  # its own policy: kept with it
            retry = None if policy.retry == defaults.retry else encoded(policy.retry, "retry")
            changes.update(
                max_attempts=policy.max_attempts,
                timeout=policy.timeout,
                retry=retry,
                result_ttl=policy.result_ttl,
            )
        changes["priority"] = policy.priority
        if priority is not None:
            changes["priority"] = check_integer(priority, "priority", -MAX_PRIORITY, MAX_PRIORITY)
        changes["queue"] = policy.queue if queue is None else check_queue(queue)
        run_after = 0.0
        if delay is not None:
            wait = seconds(delay, "delay")
            if wait > MAX_DELAY:
                raise InvalidJob(f"delay must be at most {MAX_DELAY:.0f} seconds, got {wait:g}")
            run_after = time.time() + wait
        if at is not None:
            run_after = max(run_after, when(at))
            if run_after > LATEST:
                raise InvalidJob("at must be a time before the year 10000")
        changes["run_after"] = run_after
        if depends_on is not None:
            if isinstance(depends_on, int | str):
                depends_on = [depends_on]
            if not isinstance(depends_on, list | tuple):
                raise InvalidJob(f"depends_on must be a list of job ids, got {shown(depends_on)}")
            ids = [check_integer(i, "depends_on", 1, MAX_INT64) for i in depends_on]
            changes["depends_on"] = tuple(dict.fromkeys(ids))
        for name, value in changes.items():
            setattr(job, name, value)
        return job

    def _any(self, function: Any, args: Any, kwargs: Any, **options: Any) -> NewJob:
        """A job of any registered function, with JSON arguments."""
        return self._calls(function, [(args, kwargs)], **options)[0]

    def _calls(
        self, function: Any, calls: Iterable[tuple[Any, Any]], **options: Any
    ) -> builtins.list[NewJob]:
        """Jobs of one registered function, one per (args, kwargs), all with the same
        options: the function's policy and the options are checked once."""
        function = self.registry.known(function)
        template = None
        jobs = []
        for call_args, call_kwargs in calls:
            args = [] if call_args is None else call_args
            kwargs = {} if call_kwargs is None else call_kwargs
            if isinstance(args, tuple):
                args = list(args)
            if not isinstance(args, list):
                raise InvalidJob(f"args must be a list, got {shown(args)}")
            if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise InvalidJob(f"kwargs must be an object with string keys, got {shown(kwargs)}")
            if function == DEFAULT_FUNCTION:  # the built-in: fib(n, mod), kept as n and mod
                if kwargs or not 1 <= len(args) <= 2:
                    raise InvalidJob("fib takes args [n] or [n, mod]")
                mod = check_integer(args[1], "mod", 2, MAX_INT64) if len(args) > 1 else None
                jobs.append(self._fib(args[0], mod, None, **options))
                continue
            args_text, kwargs_text = encoded(args, "args"), encoded(kwargs, "kwargs")
            if len(args_text) + len(kwargs_text) > MAX_PAYLOAD:
                size = len(args_text) + len(kwargs_text)
                raise InvalidJob(
                    f"args and kwargs are {size} bytes encoded, more than {MAX_PAYLOAD}"
                )
            if template is None:
                template = self._with_options(NewJob(function), **options)
            jobs.append(template.called(args_text, kwargs_text))
        return jobs

    def submit(
        self,
        target: Any = None,
        mod: int | None = None,
        function: str | None = None,
        key: str | None = None,
        *,
        args: builtins.list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        delay: float | str | None = None,
        at: float | datetime | str | None = None,
        priority: int | None = None,
        depends_on: builtins.list[int] | None = None,
        queue: str | None = None,
    ) -> int:
        """Enqueue a job; its id.

        `submit("send", args=[...], kwargs={...})` runs the registered function `send`
        with JSON arguments; `submit(100)` (or `submit(100, mod=7)`) is the built-in
        F(n) mod m, and `submit(12, function="square")` a configured f(n, mod).
        `delay` (seconds or "10s") or `at` (epoch seconds, a datetime or ISO 8601): not
        before then. `priority`: higher first among due jobs (default: the function's).
        `depends_on`: job ids that must be done first (one failed or cancelled cancels
        this one). `queue`: the workers that take it (default: the function's).
        With an idempotency `key`, a retry (the same key and job, within a day) returns
        the first submission's id and enqueues nothing; the key with another job is
        JobConflict.
        """
        options = {
            "delay": delay,
            "at": at,
            "priority": priority,
            "depends_on": depends_on,
            "queue": queue,
        }
        # an integer's text is never a function's name: the registry (which may import
        # [jobs] modules) is asked about the rest only
        number = not isinstance(target, str) or integer_text(target)
        named = not number and self.registry.registered(target)
        if target is not None and not named and args is None and kwargs is None:
            try:  # n: an int, or text of one; anything else is no job either way
                job = self._fib(target, mod, function, **options)
            except InvalidJob as exc:
                if number:
                    raise
                known = ", ".join(dict.fromkeys(self.registry.names()))
                raise InvalidJob(f"{exc} (nor is it a job function: {known})") from None
        else:
            if target is not None and function is not None:
                raise InvalidJob("name the function once")
            if mod is not None:
                raise InvalidJob("mod is for the Fibonacci-shaped jobs: submit(n, mod)")
            job = self._any(target if target is not None else function, args, kwargs, **options)
        return self._submit([job], key)[0]

    def submit_many(
        self,
        ns: builtins.list[int],
        mod: int | None = None,
        function: str | None = None,
        key: str | None = None,
        **options: Any,
    ) -> builtins.list[int]:
        """Enqueue one Fibonacci-shaped job per n in one transaction (all or none); their
        ids, in order. A `key` makes the whole submission idempotent, and `options`
        (delay, at, priority, depends_on, queue) apply to each, as for `submit`."""
        return self._submit([self._fib(n, mod, function, **options) for n in ns], key)

    def map(
        self,
        function: str,
        calls: Iterable[Any],
        key: str | None = None,
        **options: Any,
    ) -> builtins.list[int]:
        """Enqueue one job of `function` per call, in one transaction (all or none); their
        ids, in order. A call is an args list, or a pair `(args, kwargs)`. `key` and
        `options` (delay, at, priority, depends_on, queue) as for `submit`, for all."""
        pairs = []
        for call in calls:
            pair = isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], dict)
            pairs.append(call if pair else (call, None))
        return self._submit(self._calls(function, pairs, **options), key)

    def _submit(self, jobs: builtins.list[NewJob], key: str | None) -> builtins.list[int]:
        if not jobs:
            return []
        keyed = None if key is None else Key.of(check_key(key), jobs)
        return self._store.submit_many(jobs, keyed)

    # -- looking -----------------------------------------------------------------------

    def _record(self, job_id: Any) -> dict[str, Any]:
        job_id = check_integer(job_id, "job id", 1, MAX_INT64)
        record = self._store.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def get(self, job_id: int) -> dict[str, Any]:
        """The job: job_id, status, function, input, mod, output, error, attempts,
        init_time, started_time, finished_time (ISO 8601 UTC), worker."""
        return public(self._record(job_id))

    def list(
        self,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        function: str | None = None,
        queue: str | None = None,
    ) -> dict[str, Any]:
        """{"jobs": [...], "count": C, "total": T}: a page of jobs by id, T matching in all,
        of one status, function and queue if given."""
        wanted = check_status(status)
        limit = check_integer(limit, "limit", 0, MAX_LIMIT)
        offset = check_integer(offset, "offset", 0, MAX_INT64)
        if queue is not None:
            queue = check_queue(queue)
        records, total = self._store.list(wanted, limit, offset, function, queue)
        jobs = [public(r) for r in records]
        return {"jobs": jobs, "count": len(jobs), "total": total}

    def wait_job(
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

    def wait(self, job_id: int, timeout: float | None = None) -> Any:
        """Wait for the job; its result (any JSON value), or JobFailed with its error
        (JobTimeout after `timeout` seconds). `wait_job` gives the whole job instead."""
        job = self.wait_job(job_id, timeout)
        if job["status"] != Status.DONE:
            raise JobFailed(job)
        return job["result"]

    def requeue(self, job_id: int | None = None) -> builtins.list[int]:
        """Put a failed job back (None: every failed job, the dead letters), with a fresh
        set of attempts and its errors kept; the ids requeued. JobConflict if the one
        job named is not failed."""
        if job_id is None:
            return self._store.requeue(self._store.failed_ids())
        record = self._record(job_id)
        done = self._store.requeue([record["job_id"]])
        if not done:
            raise JobConflict(f"job {record['job_id']} is {record['status']}, not failed")
        return done

    def purge(self, status: str, older_than: float | str = 0) -> int:
        """Delete the finished jobs in `status` (done, failed or cancelled) that finished
        more than `older_than` (seconds, or "1d") ago; how many."""
        wanted = check_status(status)
        if wanted is None or not wanted.finished:
            finished = "done, failed or cancelled"
            raise InvalidJob(f"only finished jobs are purged ({finished}), not {status}")
        return self._store.purge(wanted, time.time() - seconds(older_than, "older_than"))

    def cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel a pending or running job (a running job's result will be dropped).

        The jobs waiting on it are cancelled too. Raises `JobConflict` if the job has
        finished already."""
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
        return jobs.wait_job(job_id, timeout)


def cancel_job(job_id: int, *, config: Path | None = None) -> dict[str, Any]:
    with Jobs.open(config) as jobs:
        return jobs.cancel(job_id)


def integer_text(text: str) -> bool:
    """Whether `text` reads as an integer (an n, as in `submit("100")`), not a name."""
    return text.strip().lstrip("+-").replace("_", "").isdigit()


def check_queue(value: Any) -> str:
    if not isinstance(value, str) or not QUEUE_NAME.fullmatch(value):
        raise InvalidJob(f"a queue name is letters, digits, '_', '-' and '.', got {shown(value)}")
    return value


def when(value: Any) -> float:
    """`at`: epoch seconds, a datetime (naive: local time) or an ISO 8601 string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidJob(f"at must be a time, got {shown(value)}") from None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InvalidJob(f"at must be a time, got {shown(value)}")


__all__ = [
    "InvalidJob",
    "JobError",
    "JobFailed",
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
