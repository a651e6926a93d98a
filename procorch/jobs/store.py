"""The store interface: what the API and the worker need from wherever jobs are kept.

Two implementations: `SQLiteStore` (jobs.db in the run directory, one machine) and
`RedisStore` (a Redis server, several machines). Records handed back are plain dicts
with the fields of `job.FIELDS`, times as epoch seconds (`job.public` formats them).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procorch.config import JobsSettings
from procorch.jobs.job import DEFAULT_QUEUE, JobConflict, Status
from procorch.services.protocol import KEY_RETENTION


@dataclass(frozen=True)
class WorkerId:
    """Who runs a job: a label for humans (also the lease's fence) and an OS identity."""

    replica: str  # service.replica: the same for a worker and its replacement
    label: str  # host:service.replica:pid, unique among live workers
    pid: int
    start: int | None  # the process's start time in clock ticks since boot (pids are reused)

    @classmethod
    def current(cls, service: str, replica: int) -> WorkerId:
        pid, name = os.getpid(), f"{service}.{replica}"
        return cls(name, f"{socket.gethostname()}:{name}:{pid}", pid, process_start(pid))


KEY_TTL = KEY_RETENTION  # seconds a submission's idempotency key is remembered


@dataclass(slots=True)  # not frozen: a batch makes many, and frozen's __init__ is slower
class NewJob:
    """A job to enqueue, validated already, with the policy it was submitted under.

    Fibonacci-shaped (the built-in job, and `f(n, mod) -> int` functions): `input` and
    `mod`, result in `output`. Any other: JSON `args` and `kwargs`, result in `result`.
    """

    function: str
    input: int | None = None
    mod: int | None = None
    args: str | None = None  # JSON text
    kwargs: str | None = None
    priority: int = 0
    queue: str = DEFAULT_QUEUE
    run_after: float = 0.0  # epoch seconds: not before
    depends_on: tuple[int, ...] = ()
    max_attempts: int | None = None  # None: the workers' [jobs] settings
    timeout: float | None = None
    retry: str | None = None  # JSON of `Policy.retry`
    result_ttl: float | None = None

    @property
    def plain(self) -> bool:
        """Fibonacci-shaped with every default: the first version's job, stored as it was."""
        return (
            self.args is None
            and self.priority == 0
            and self.queue == DEFAULT_QUEUE
            and self.run_after == 0.0
            and not self.depends_on
            and self.max_attempts is None
            and self.timeout is None
            and self.retry is None
            and self.result_ttl is None
        )

    def called(self, args: str, kwargs: str) -> NewJob:
        """This job (its function and options) with these JSON arguments: a batch's
        jobs share everything else, checked once."""
        return NewJob(
            function=self.function,
            args=args,
            kwargs=kwargs,
            priority=self.priority,
            queue=self.queue,
            run_after=self.run_after,
            depends_on=self.depends_on,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            retry=self.retry,
            result_ttl=self.result_ttl,
        )

    def identity(self) -> Any:
        """What an idempotency key's digest covers: the job asked for, not when it is due.
        A Fibonacci-shaped job's is (function, n, mod), as before: keys stay valid."""
        if self.args is None:
            return (self.function, self.input, self.mod)
        return (self.function, self.args, self.kwargs, self.priority, self.queue, self.depends_on)


@dataclass(frozen=True)
class Key:
    """An idempotency key and a digest of what was submitted under it."""

    name: str
    digest: str

    @classmethod
    def of(cls, name: str, jobs: Sequence[NewJob]) -> Key:
        identities = [job.identity() for job in jobs]
        return cls(name, hashlib.sha256(repr(identities).encode()).hexdigest())

    def replay(self, digest: str, ids: list[int]) -> list[int]:
        """The ids a first submission under this key got, if it asked for the same jobs."""
        if digest != self.digest:
            raise JobConflict(f"idempotency key {self.name!r} was used for other jobs")
        return ids


@dataclass(slots=True)  # not frozen: one per job on the hot path, and frozen's __init__ is slower
class Claim:
    """A job a worker holds: enough to run it and to fence its result."""

    job_id: int
    function: str
    n: int | None  # a Fibonacci-shaped job's; else args and kwargs
    mod: int | None
    attempts: int  # this attempt's number, from 1
    started: float
    entry: str | None = None  # Redis: the stream entry that delivered it
    args: str | None = None  # JSON text
    kwargs: str | None = None
    max_attempts: int | None = None  # None: [jobs] max_attempts
    timeout: float | None = None
    retry: str | None = None
    result_ttl: float | None = None


@dataclass(slots=True)
class Attempt:
    """A claim's attempt, run and not yet recorded: its outcome and when it began."""

    claim: Claim
    output: int | str | None  # done: an int for a Fibonacci-shaped job, else JSON text
    error: str | None  # failed: why
    retry_in: float | None = None  # failed: seconds before it is tried again; None: for good
    started: float | None = None  # epoch seconds it began; None: when it was claimed


# Upper bounds (seconds) of the job duration histogram's buckets, Prometheus's defaults
# stretched to a minute; a last bucket, +Inf, takes the rest. Both stores count finished
# jobs into buckets by index (0 to len), so changing this list needs their counts reset.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)  # fmt: skip


def duration_bucket(seconds: float) -> int:
    """The index of the bucket a duration falls in: the first bound >= it (Prometheus's
    `le`), len(DURATION_BUCKETS) for +Inf. The stores' SQL and Lua count the same way:
    the number of bounds below `seconds`."""
    return bisect.bisect_left(DURATION_BUCKETS, seconds)


@dataclass(frozen=True)
class Durations:
    """How long finished jobs ran, as a Prometheus histogram: read on every scrape, so
    the stores keep it up to date as jobs finish rather than scanning jobs to build it."""

    buckets: tuple[tuple[float, int], ...]  # (upper bound, cumulative count), ends with inf
    count: int
    sum: float  # seconds

    @classmethod
    def from_counts(cls, counts: Sequence[int], seconds: float) -> Durations:
        """From the count in each bucket alone (by index, len(DURATION_BUCKETS) + 1 of them)."""
        assert len(counts) == len(DURATION_BUCKETS) + 1
        cumulative: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*DURATION_BUCKETS, math.inf), counts, strict=True):
            total += count
            cumulative.append((bound, total))
        return cls(tuple(cumulative), total, seconds)


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot); None if it is gone or a zombie.

    (pid, start) names a process for good: a reused pid comes with another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its last ')'
    fields = stat[stat.rindex(b")") + 2 :].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def process_alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and process_start(pid) == start


class Waiter(ABC):
    """Wakes a client waiting for jobs to finish; registered before the first look."""

    @abstractmethod
    def wait(self, timeout: float) -> dict[int, dict[str, Any]]:
        """Sleep until some job finishes (or `timeout`); the finished jobs' records, by id,
        where the store sends them along (Redis does; SQLite only rings: {})."""

    @abstractmethod
    def close(self) -> None: ...


class Store(ABC):
    # A job id never names another job: SQLite's AUTOINCREMENT never reuses one (Redis's
    # ids restart after a FLUSHALL), so a finished job's record may be kept by its id.
    permanent_ids: bool = True

    def __init__(self, settings: JobsSettings, run_dir: Path) -> None:
        self.settings = settings
        self.run_dir = run_dir

    # -- clients ------------------------------------------------------------------

    @abstractmethod
    def submit_many(self, jobs: list[NewJob], key: Key | None = None) -> list[int]:
        """Enqueue jobs, validated already, in one transaction; their ids.

        With a `key`, a submission is made once: the same key again returns the first
        one's ids and enqueues nothing (JobConflict if it asked for other jobs). The key
        is stored in the same transaction as the jobs, and kept `KEY_TTL` seconds.
        A job that depends on others waits for them (InvalidJob for an unknown id), or
        is cancelled at once if one of them failed or was cancelled.
        """

    @abstractmethod
    def get(self, job_id: int) -> dict[str, Any] | None: ...

    @abstractmethod
    def list(
        self,
        status: Status | None,
        limit: int,
        offset: int,
        function: str | None = None,
        queue: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Jobs by id (oldest first), and how many match in all."""

    @abstractmethod
    def cancel(self, job_id: int) -> dict[str, Any] | None:
        """Cancel a waiting, pending or running job, and the jobs that depend on it; the
        record after (unchanged if finished)."""

    @abstractmethod
    def requeue(self, job_ids: Sequence[int]) -> list[int]:
        """Put failed jobs back, pending, with a fresh set of attempts (their errors
        kept); the ids that were failed and are now pending."""

    @abstractmethod
    def failed_ids(self) -> list[int]:
        """The dead letters: every failed job's id."""

    @abstractmethod
    def purge(self, status: Status, before: float) -> int:
        """Delete the jobs in a finished `status` that finished before `before`; how many."""

    @abstractmethod
    def purge_expired(self, now: float) -> int:
        """Delete finished jobs past their result_ttl (a batch of them); how many. Workers
        call it every few hundred ms: an index look-up when there is nothing to do."""

    @abstractmethod
    def busy(self, queues: Sequence[str] | None) -> bool:
        """Whether any job of these queues (None: all) is waiting, pending or running."""

    @abstractmethod
    def counts(self) -> dict[str, int]: ...

    @abstractmethod
    def finished_since(self, since: float) -> int:
        """How many jobs finished (done or failed) at or after `since` (epoch seconds)."""

    @abstractmethod
    def durations(self) -> Durations:
        """How long finished jobs ran: started_time to finished_time of each job that ended
        done or failed (one observation per job, when it reaches done/failed; a retried
        attempt is not one, nor is a cancelled job)."""

    @abstractmethod
    def waiter(self) -> Waiter: ...

    @abstractmethod
    def close(self) -> None:
        """Release connections and sockets."""

    # -- workers -------------------------------------------------------------------

    queues: tuple[str, ...] | None = None  # a worker's queues (None: all), before its claims
    # whether it claims several jobs in one transaction and can hand unstarted ones back
    # (`claim_batch`, `finish_batch`); if not, a worker holds one job at a time
    batches: bool = False

    @abstractmethod
    def claim(self, worker: WorkerId, block: float) -> Claim | None:
        """The next due job of the worker's `queues`, highest priority first, then oldest;
        now running for `worker`. None after up to `block` s of nothing."""

    @abstractmethod
    def interrupt(self) -> None:
        """Cut short a `claim` blocking in this process (from a signal handler)."""

    @abstractmethod
    def finish(
        self,
        worker: WorkerId,
        claim: Claim,
        output: int | str | None,
        error: str | None,
        claim_next: bool,
        retry_in: float | None = None,
    ) -> Claim | None:
        """Record an attempt and maybe claim the next: done with `output` (an int for a
        Fibonacci-shaped job, else the result as JSON text), or failed with `error`,
        retried `retry_in` s later (None: failed for good).

        A result is dropped when the job is no longer this attempt's (cancelled, or
        taken back after its lease lapsed).
        """

    def claim_batch(self, worker: WorkerId, block: float, limit: int) -> list[Claim]:
        """Up to `limit` due jobs, in claim order, now running for `worker`; [] after up
        to `block` s of nothing. A store that holds one lease at a time (Redis) claims one."""
        claim = self.claim(worker, block)
        return [] if claim is None else [claim]

    def finish_batch(
        self,
        worker: WorkerId,
        attempts: Sequence[Attempt],
        claim_next: int,
        release: Sequence[Claim] = (),
    ) -> list[Claim]:
        """Record `attempts` (fenced as `finish`), hand back `release`d claims that were
        never started (pending again, their attempt not counted), and claim up to
        `claim_next` more: in one transaction where the store can. Here: one `finish`
        after another, for a store that claims one job at a time (nothing to release)."""
        assert not release, f"{type(self).__name__} claims one job at a time"
        following: Claim | None = None
        for index, attempt in enumerate(attempts):
            last = index == len(attempts) - 1
            following = self.finish(
                worker,
                attempt.claim,
                attempt.output,
                attempt.error,
                claim_next > 0 and last,
                attempt.retry_in,
            )
        if not attempts and claim_next:
            return self.claim_batch(worker, 0.0, claim_next)
        return [] if following is None else [following]

    @abstractmethod
    def progress(self, worker: WorkerId, claim: Claim, fraction: float, meta: str | None) -> bool:
        """Record a running attempt's progress (0.0 to 1.0) and JSON meta; False if the
        job is no longer this attempt's."""

    @abstractmethod
    def recover(self, worker: WorkerId) -> int:
        """Take back the jobs of dead workers and lapsed leases; how many."""

    @abstractmethod
    def cancelled(self, claim: Claim) -> bool:
        """Whether the claimed job was cancelled meanwhile (checked during a long attempt)."""
