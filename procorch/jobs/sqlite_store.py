"""The embedded store: `jobs.db` in the run directory (SQLite, WAL).

Claiming is atomic: `BEGIN IMMEDIATE` takes the single write lock, and one
`UPDATE … RETURNING` moves the best due pending job to running; a worker records its
jobs and claims the next in the same transaction, a batch of quick ones at a time
(`batch.py`), so a job costs a share of a write transaction in the worker and one (or
a share of a batch) in the submitter. Claims handed back unstarted are pending again
with their attempt uncounted.
Durability: WAL with synchronous=NORMAL (the default) loses nothing committed when
processes crash, since committed pages are in the OS's cache; synchronous=FULL also
fsyncs every commit, so committed jobs survive a power loss too.
A running job carries its worker's (pid, start time) and a lease; `recover` puts
back jobs whose worker is gone or whose lease lapsed.
Due jobs are claimed highest priority first, then oldest, from partial indexes of the
pending jobs only. A job waiting for others has a row per job it waits for in
`job_deps`; the finish of a parent settles its children in the same transaction.
Finished jobs are deleted after their result_ttl by the workers, as they look for lost
jobs: those of the default TTL by the index of finish times, those of a TTL of their own
by an index of their expiry (which the others never enter): look-ups, never a scan.
A jobs.db of the first version (schema 1: Fibonacci jobs only) is rebuilt into this
schema on first open, in one transaction, keeping every job, id, count and key.
A full disk fails a write whole (SQLite rolls the transaction back): it raises
`StoreFull`, and the same call succeeds once there is room again. jobs.db (and its
-wal and -shm, which SQLite creates with the database's mode) is the owner's alone.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from procorch.config import JobsSettings
from procorch.jobs.job import (
    CANCELLABLE,
    DEFAULT_QUEUE,
    FIELDS,
    JobNotFound,
    Status,
    StoreFull,
    StoreUnavailable,
)
from procorch.jobs.store import (
    DURATION_BUCKETS,
    KEY_TTL,
    Attempt,
    Claim,
    Durations,
    Key,
    NewJob,
    Store,
    Waiter,
    WorkerId,
    process_alive,
)
from procorch.jobs.wake import Bell, Sleeper

DB_NAME = "jobs.db"
LEASE_GRACE = 1.0  # a lease is the job's timeout and this: only a hung worker outlives it
BUSY_TIMEOUT = 30.0  # give up on the write lock after this long
BUSY_POLL = 0.00005  # seconds between looks at a busy write lock, at first (`busy_delay`)
BUSY_FAST = 0.005  # seconds of waiting polled at that pace
BUSY_POLL_MAX = 0.005  # seconds between looks at most
_T = TypeVar("_T")
_PROCESS_WRITER = threading.Lock()  # see SQLiteStore._write
_NOT_PLAIN = "(priority != 0 OR queue != 'default')"
SCHEMA_VERSION = 2  # PRAGMA user_version: 0 (none, or the first version's), 2 now
PURGE_BATCH = 500  # expired jobs deleted per look

# The jobs table; the first version's had input and mod NOT NULL and none of the columns
# after `worker`'s group. Kept apart from _SCHEMA: a migration creates it under another name.
_JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    job_id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: an id is never reused
    status TEXT NOT NULL,
    function TEXT NOT NULL,
    input INTEGER,
    mod INTEGER,
    output INTEGER,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    init_time REAL NOT NULL,
    started_time REAL,
    finished_time REAL,
    worker TEXT,
    worker_pid INTEGER,
    worker_start INTEGER,
    lease_until REAL,
    run_after REAL NOT NULL DEFAULT 0,
    args TEXT,  -- JSON: any other job's arguments and result
    kwargs TEXT,
    result TEXT,
    errors TEXT,  -- JSON: every failed attempt's error
    progress REAL,
    meta TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    queue TEXT NOT NULL DEFAULT 'default',
    depends_on TEXT,
    max_attempts INTEGER,  -- the job's policy; NULL: the workers' [jobs] settings
    timeout REAL,
    retry TEXT,
    result_ttl REAL,  -- its own; NULL: [jobs] result_ttl
    children INTEGER  -- 1 once a job depends on it: its finish settles them
)"""
_V1_COLUMNS = (
    "job_id, status, function, input, mod, output, error, attempts, init_time, started_time,"
    " finished_time, worker, worker_pid, worker_start, lease_until, run_after"
)

_SCHEMA = (
    # idempotency keys of submissions, written in the transaction that enqueues the jobs
    """
    CREATE TABLE IF NOT EXISTS job_keys (
        key TEXT PRIMARY KEY, job_ids TEXT NOT NULL, digest TEXT NOT NULL, created REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS job_keys_created ON job_keys (created)",
    _JOBS_TABLE.format(name="jobs"),
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, job_id)",
    # the claim's order in each queue, over the pending jobs that are not plain (plain:
    # the default queue at priority 0, claimed by id from jobs_by_status as ever, so
    # that they cost no index more than in the first version)
    f"""CREATE INDEX IF NOT EXISTS jobs_ready_queue ON jobs (queue, priority DESC, job_id)
    WHERE status = 'pending' AND {_NOT_PLAIN}""",
    # every queue a job was ever submitted to, for the workers that take them all
    "CREATE TABLE IF NOT EXISTS job_queues (name TEXT PRIMARY KEY) WITHOUT ROWID",
    "INSERT OR IGNORE INTO job_queues VALUES ('default')",
    """CREATE INDEX IF NOT EXISTS jobs_own_ttl ON jobs (finished_time + result_ttl)
    WHERE result_ttl >= 0 AND finished_time IS NOT NULL""",
    # a waiting job's parents: a row per (child, parent) not yet done
    """CREATE TABLE IF NOT EXISTS job_deps (
        child INTEGER NOT NULL, parent INTEGER NOT NULL, PRIMARY KEY (parent, child)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS job_deps_child ON job_deps (child)",
    # throughput counts the recent finishes only, not the whole table
    """CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_time)
    WHERE status IN ('done', 'failed')""",
    # counts per status kept by triggers, in the transaction that changes them: `stats`
    # (which programs poll) reads five rows, not the whole table
    "CREATE TABLE IF NOT EXISTS counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    """INSERT OR IGNORE INTO counts
    SELECT value, (SELECT count(*) FROM jobs WHERE status = value) FROM json_each(?)""",
    """CREATE TRIGGER IF NOT EXISTS jobs_inserted AFTER INSERT ON jobs BEGIN
        UPDATE counts SET n = n + 1 WHERE status = new.status;
    END""",
    """CREATE TRIGGER IF NOT EXISTS jobs_moved AFTER UPDATE OF status ON jobs
    WHEN old.status != new.status BEGIN
        UPDATE counts SET n = n - 1 WHERE status = old.status;
        UPDATE counts SET n = n + 1 WHERE status = new.status;
    END""",
    """CREATE TRIGGER IF NOT EXISTS jobs_deleted AFTER DELETE ON jobs BEGIN
        UPDATE counts SET n = n - 1 WHERE status = old.status;
    END""",
    # the duration histogram, kept the same way: jobs finished and the seconds they ran,
    # per bucket (bound NULL: +Inf), so a scrape reads 14 rows. A job is observed once, as
    # it leaves running for done or failed: a retry (running -> pending) or a cancel is
    # not. A jobs.db made before this table existed gains it here, empty: the jobs it
    # finished before are not counted.
    """CREATE TABLE IF NOT EXISTS durations (
        bucket INTEGER PRIMARY KEY,  -- the index into DURATION_BUCKETS
        bound REAL,
        n INTEGER NOT NULL,
        seconds REAL NOT NULL
    )""",
    # the bucket is the number of bounds below the duration, as `store.duration_bucket`;
    # a worker's clock stepping back mid-job counts as 0 s, not a negative time
    """CREATE TRIGGER IF NOT EXISTS jobs_durations AFTER UPDATE OF status ON jobs
    WHEN old.status = 'running' AND new.status IN ('done', 'failed')
        AND new.started_time IS NOT NULL AND new.finished_time IS NOT NULL BEGIN
        UPDATE durations SET n = n + 1,
            seconds = seconds + max(new.finished_time - new.started_time, 0.0)
        WHERE bucket = (
            SELECT count(*) FROM durations WHERE bound < new.finished_time - new.started_time
        );
    END""",
)
_COLUMNS = ", ".join(f"{name}" if name != "run_at" else "run_after AS run_at" for name in FIELDS)
_START = """
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_time = :now,
    finished_time = NULL, worker = :label, worker_pid = :pid, worker_start = :start,
    lease_until = :now + coalesce(timeout, :timeout) + :grace
WHERE job_id = {which}
RETURNING job_id, function, input, mod, attempts, args, kwargs, max_attempts, timeout, retry,
    result_ttl
"""
# a queue's due head (job_id, priority): the best of its plain jobs (the default queue's,
# oldest first) and of the others (by priority, then oldest)
_HEAD = f"""
SELECT job_id, priority FROM (
    SELECT job_id, priority FROM jobs INDEXED BY jobs_by_status
    WHERE status = 'pending' AND :queue = 'default' AND run_after <= :now
        AND priority = 0 AND queue = 'default'
    ORDER BY job_id LIMIT 1
) UNION ALL SELECT job_id, priority FROM (
    SELECT job_id, priority FROM jobs INDEXED BY jobs_ready_queue
    WHERE status = 'pending' AND {_NOT_PLAIN} AND queue = :queue AND run_after <= :now
    ORDER BY priority DESC, job_id LIMIT 1
)
ORDER BY priority DESC, job_id LIMIT 1
"""
# the same head for the claim, cheaper than the union: the others above priority 0, else
# the plain jobs (all of the default queue's at priority 0), else the others at 0 or
# below; coalesce stops at the first that finds one
_SPECIAL = f"""(
    SELECT job_id FROM jobs INDEXED BY jobs_ready_queue
    WHERE status = 'pending' AND {_NOT_PLAIN} AND queue = :queue AND run_after <= :now
        AND priority {{}}
    ORDER BY priority DESC, job_id LIMIT 1
)"""
_PLAIN = """(
    SELECT job_id FROM jobs INDEXED BY jobs_by_status
    WHERE status = 'pending' AND :queue = 'default' AND run_after <= :now
        AND priority = 0 AND queue = 'default'
    ORDER BY job_id LIMIT 1
)"""
_CLAIM = _START.format(
    which=f"coalesce({_SPECIAL.format('> 0')}, {_PLAIN}, {_SPECIAL.format('<= 0')})"
)
_CLAIM_ID = _START.format(which=":job_id")
# a batch of one queue's due jobs in one statement: the `:limit` best in `_CLAIM`'s order
# (the others above priority 0, then the plain ones, then the others at 0 or below), so
# the lock is held for one look down each index per batch, not one per job. RETURNING's
# order is SQLite's: `claim_order` sorts the claims back into the claim's order.
_SPECIAL_N = f"""SELECT job_id, priority FROM jobs INDEXED BY jobs_ready_queue
    WHERE status = 'pending' AND {_NOT_PLAIN} AND queue = :queue AND run_after <= :now
        AND priority {{}}
    ORDER BY priority DESC, job_id LIMIT :limit"""
_PLAIN_N = """SELECT job_id, 0 FROM jobs INDEXED BY jobs_by_status
    WHERE status = 'pending' AND :queue = 'default' AND run_after <= :now
        AND priority = 0 AND queue = 'default'
    ORDER BY job_id LIMIT :limit"""
_CLAIM_MANY = (
    _START.format(
        which=f"""job_id IN (SELECT job_id FROM (
        SELECT 0 AS part, * FROM ({_SPECIAL_N.format("> 0")})
        UNION ALL SELECT 1, * FROM ({_PLAIN_N})
        UNION ALL SELECT 2, * FROM ({_SPECIAL_N.format("<= 0")})
    ) ORDER BY part, priority DESC, job_id LIMIT :limit)"""
    )
    .replace("WHERE job_id = job_id IN", "WHERE job_id IN")
    .replace("result_ttl\n", "result_ttl, priority, queue\n")
)
# when the attempt began: a job claimed in a batch begins after the ones before it
_BEGAN = "started_time = coalesce(:started, started_time)"
_FENCE = "job_id = :job_id AND status = 'running' AND worker = :label AND attempts = :attempts"
_DONE = f"""
UPDATE jobs SET status = 'done', output = :output, error = NULL, finished_time = :now,
    lease_until = NULL, {_BEGAN}
WHERE {_FENCE}
RETURNING children
"""
_DONE_JSON = _DONE.replace("output = :output", "result = :output")
# a batch of done jobs in one statement: `:batch` is a JSON list of [job_id, attempts,
# output, started] (`done_batches`), each row fenced as `_FENCE`. The `+` keeps SQLite
# from the status index: one look-up by id per entry, not a scan of the running jobs.
_DONE_MANY = """
UPDATE jobs SET status = 'done', output = json_extract(b.value, '$[2]'), error = NULL,
    finished_time = :now, lease_until = NULL,
    started_time = coalesce(json_extract(b.value, '$[3]'), started_time)
FROM json_each(:batch) AS b
WHERE jobs.job_id = json_extract(b.value, '$[0]') AND +status = 'running'
    AND +worker = :label AND +attempts = json_extract(b.value, '$[1]')
RETURNING job_id, children
"""
_DONE_MANY_JSON = _DONE_MANY.replace("output = json_extract", "result = json_extract")
_ERRORS = """errors = json_insert(coalesce(errors, '[]'), '$[#]',
    json_object('attempt', attempts, 'error', :error, 'at', :now))"""
_RETRY = f"""
UPDATE jobs SET status = 'pending', error = :error, run_after = :run_after, lease_until = NULL,
    {_BEGAN}, {_ERRORS}
WHERE {_FENCE}
"""
_FAIL = f"""
UPDATE jobs SET status = 'failed', error = :error, finished_time = :now, lease_until = NULL,
    {_BEGAN}, {_ERRORS}
WHERE {_FENCE}
"""
# a claim handed back unstarted: pending as it was, its attempt not counted
_UNCLAIM = f"""
UPDATE jobs SET status = 'pending', attempts = attempts - 1, started_time = NULL, worker = NULL,
    worker_pid = NULL, worker_start = NULL, lease_until = NULL
WHERE {_FENCE}
"""

_CANCEL = f"""
UPDATE jobs SET status = 'cancelled', error = coalesce(:why, error), finished_time = :now,
    lease_until = NULL
WHERE job_id = :job_id AND status IN ({", ".join(repr(s) for s in CANCELLABLE)})
"""
_INSERT_PLAIN_MANY = """
INSERT INTO jobs (status, function, input, mod, init_time) VALUES ('pending', ?, ?, ?, ?)
"""
_INSERT_PLAIN = _INSERT_PLAIN_MANY + "RETURNING job_id"
_INSERT_MANY = """
INSERT INTO jobs (status, function, input, mod, init_time, args, kwargs, priority, queue,
    run_after, depends_on, max_attempts, timeout, retry, result_ttl)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT = _INSERT_MANY + "RETURNING job_id"


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


# What a full disk looks like to SQLite: a write that cannot grow the database or its WAL
# (SQLITE_FULL), or a connection that cannot size its shared-memory file -shm
# (SQLITE_IOERR_SHMSIZE: reads fail too, until there is room for its 32 KiB).
_FULL_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_SHMSIZE})


class _Connection(sqlite3.Connection):
    """A connection whose full-disk errors are `StoreFull`, wherever a statement runs:
    callers handle one error type, and the busy errors `_retrying` waits out stay as
    they are."""

    path: Path

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self._full_is_store_full(super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        return self._full_is_store_full(super().executemany, sql, parameters)

    def _full_is_store_full(
        self, run: Callable[[str, Any], sqlite3.Cursor], sql: str, parameters: Any
    ) -> sqlite3.Cursor:
        try:
            return run(sql, parameters)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _FULL_CODES:
                raise
            raise StoreFull(
                f"the job store is full: {self.path} cannot grow (database or disk is full);"
                f" free space in {self.path.parent}"
            ) from None


def _owner_only(path: Path, mode: int) -> None:
    """Tighten a file or directory procorch created (perhaps under an older, laxer version)."""
    try:
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except OSError:
        pass  # not ours, or gone: opening it will say what is wrong


class _SQLiteWaiter(Waiter):
    def __init__(self, directory: Path) -> None:
        self.sleeper = Sleeper(directory)

    def wait(self, timeout: float) -> dict[int, dict[str, Any]]:
        self.sleeper.wait(timeout)
        return {}

    def close(self) -> None:
        self.sleeper.close()


class SQLiteStore(Store):
    batches = True

    def __init__(self, settings: JobsSettings, run_dir: Path) -> None:
        super().__init__(settings, run_dir)
        self.path = run_dir / DB_NAME
        self._workers_dir = run_dir / "wake"  # idle workers sleep here; submits ring
        self._waiters_dir = run_dir / "done"  # clients waiting for jobs; finishes ring
        try:
            self.db = self._open()
        except (OSError, sqlite3.Error) as exc:  # an unusable run directory, a broken file
            raise StoreUnavailable(f"cannot open the job queue {self.path}: {exc}") from None
        self._workers_bell = Bell(self._workers_dir)
        self._waiters_bell = Bell(self._waiters_dir)
        self._sleeper: Sleeper | None = None  # a worker's, bound at its first idle claim
        self._all_queues: list[str] | None = None  # job_queues, as a worker of all last read

    def _open(self) -> sqlite3.Connection:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for directory in (self._workers_dir, self._waiters_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            _owner_only(directory, 0o700)
        # made owner-only before SQLite opens it, which would create it 0644 (umask 022);
        # SQLite gives -wal and -shm the database's mode
        os.close(os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o600))
        for name in ("", "-wal", "-shm"):
            _owner_only(self.path.with_name(DB_NAME + name), 0o600)
        # autocommit mode: transactions are explicit, `BEGIN IMMEDIATE` where we write;
        # busy waits are ours (`_write`), shorter than SQLite's 1 ms minimum sleep
        db = sqlite3.connect(
            self.path,
            isolation_level=None,
            timeout=0,
            check_same_thread=False,
            factory=_Connection,
        )
        db.path = self.path
        db.row_factory = sqlite3.Row
        self.db = db
        try:
            self._retrying(lambda: db.execute("PRAGMA journal_mode = WAL"))
            db.execute(f"PRAGMA synchronous = {self.settings.synchronous.upper()}")
            self._write(self._create)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if (
            version < SCHEMA_VERSION
            and db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
            ).fetchone()
        ):
            _migrate_v1(db)
        statuses = json.dumps([status.value for status in Status])
        for statement in _SCHEMA:
            db.execute(statement, (statuses,) if "?" in statement else ())
        # bound as parameters, the trigger compares with exactly Python's floats
        db.executemany(
            "INSERT OR IGNORE INTO durations VALUES (?, ?, 0, 0.0)",
            enumerate([*DURATION_BUCKETS, None]),
        )
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        if self._sleeper is not None:
            self._sleeper.close()
        self._workers_bell.close()
        self._waiters_bell.close()
        self.db.close()

    # -- transactions ----------------------------------------------------------------

    def _retrying(self, action: Callable[[], _T]) -> _T:
        began = time.monotonic()
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                waited = time.monotonic() - began
                if not _is_busy(exc) or waited > BUSY_TIMEOUT:
                    raise
            time.sleep(busy_delay(waited))

    def _write(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `body` in a write transaction, waiting (briefly, in steps) for the lock.

        Threads of one process (the gateway's) take turns on a Python lock first: a
        thread waiting on it wakes the moment it is free, where SQLite's lock is polled
        with sleeps, and only one of them at a time adds to the contention with workers.
        """
        with _PROCESS_WRITER:
            self._retrying(lambda: self.db.execute("BEGIN IMMEDIATE"))
            try:
                result = body(self.db)
                self._retrying(lambda: self.db.execute("COMMIT"))
            except BaseException:
                # a full disk has SQLite roll back by itself; a failed COMMIT leaves the
                # transaction open, and the connection would be stuck in it
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            return result

    # -- clients ---------------------------------------------------------------------

    def submit_many(self, jobs: list[NewJob], key: Key | None = None) -> list[int]:
        now = time.time()
        fresh = True

        def insert(db: sqlite3.Connection) -> list[int]:
            nonlocal fresh
            if key is not None:
                db.execute("DELETE FROM job_keys WHERE created < ?", (now - KEY_TTL,))
                seen = db.execute(
                    "SELECT job_ids, digest FROM job_keys WHERE key = ?", (key.name,)
                ).fetchone()
                if seen is not None:
                    fresh = False
                    return key.replay(seen["digest"], json.loads(seen["job_ids"]))
            if len(jobs) == 1:  # one statement, its id RETURNING: a job per call's path
                ids = [self._insert(db, jobs[0], now)]
            elif all(job.plain for job in jobs):  # a batch of F(n): one statement for all
                rows = [(job.function, job.input, job.mod, now) for job in jobs]
                ids = self._insert_many(db, _INSERT_PLAIN_MANY, rows)
            elif not any(job.depends_on for job in jobs):  # nothing to look up per job
                rows = [_row(job, "pending", now) for job in jobs]
                ids = self._insert_many(db, _INSERT_MANY, rows)
                queues = [(q,) for q in {job.queue for job in jobs} if q != DEFAULT_QUEUE]
                if queues:
                    db.executemany("INSERT OR IGNORE INTO job_queues VALUES (?)", queues)
            else:
                ids = [self._insert(db, job, now) for job in jobs]
            if key is not None:
                db.execute(
                    "INSERT INTO job_keys (key, job_ids, digest, created) VALUES (?, ?, ?, ?)",
                    (key.name, json.dumps(ids), key.digest, now),
                )
            return ids

        ids = self._write(insert)
        if fresh:
            self._workers_bell.ring()
        return ids

    @staticmethod
    def _insert_many(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> list[int]:
        db.executemany(sql, rows)
        # one writer holds the lock: AUTOINCREMENT gave them consecutive ids
        (last,) = db.execute("SELECT last_insert_rowid()").fetchone()
        return list(range(last - len(rows) + 1, last + 1))

    def _insert(self, db: sqlite3.Connection, job: NewJob, now: float) -> int:
        if job.plain:  # the hot path: the first version's insert, nothing else to decide
            return db.execute(_INSERT_PLAIN, (job.function, job.input, job.mod, now)).fetchone()[0]
        status, why, parents = "pending", None, []
        for parent in job.depends_on:
            row = db.execute("SELECT status FROM jobs WHERE job_id = ?", (parent,)).fetchone()
            if row is None:
                raise JobNotFound(parent, "depends_on: ")
            if row[0] in ("failed", "cancelled"):
                status, why = "cancelled", f"job {parent} it depends on was {row[0]}"
            elif row[0] != "done":
                parents.append(parent)
        if parents and status != "cancelled":
            status = "waiting"
        row = _row(job, "pending" if status == "cancelled" else status, now)  # cancelled below
        (job_id,) = db.execute(_INSERT, row).fetchone()
        if job.queue != DEFAULT_QUEUE:
            db.execute("INSERT OR IGNORE INTO job_queues VALUES (?)", (job.queue,))
        if status == "cancelled":
            self._cancel_in(db, job_id, why, now)
        if parents:
            rows = [(job_id, parent) for parent in parents]
            db.executemany("INSERT OR IGNORE INTO job_deps VALUES (?, ?)", rows)
            db.executemany("UPDATE jobs SET children = 1 WHERE job_id = ?", [(p,) for p in parents])
        return job_id

    def get(self, job_id: int) -> dict[str, Any] | None:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE job_id = :job_id AND NOT {_EXPIRED}",
            {"job_id": job_id, "now": time.time(), "ttl": self.settings.result_ttl},
        ).fetchone()
        return dict(row) if row else None

    def list(
        self,
        status: Status | None,
        limit: int,
        offset: int,
        function: str | None = None,
        queue: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        wanted = {"status": status.value if status else None, "function": function, "queue": queue}
        wanted = {k: v for k, v in wanted.items() if v is not None}
        where = ("WHERE " + " AND ".join(f"{k} = :{k}" for k in wanted)) if wanted else ""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY job_id LIMIT :limit OFFSET :offset",
            {**wanted, "limit": limit, "offset": offset},
        ).fetchall()
        (total,) = self.db.execute(f"SELECT count(*) FROM jobs {where}", wanted).fetchone()
        return [dict(row) for row in rows], total

    def cancel(self, job_id: int) -> dict[str, Any] | None:
        now = time.time()
        changed = self._write(lambda db: self._cancel_in(db, job_id, None, now))
        if changed:
            self._waiters_bell.ring()
        return self.get(job_id)

    def _cancel_in(self, db: sqlite3.Connection, job_id: int, why: str | None, now: float) -> int:
        """Cancel a job and, with the reason, every job waiting on it (and on those)."""
        changed = db.execute(
            _CANCEL, {"job_id": job_id, "why": why, "now": now, "ttl": self.settings.result_ttl}
        ).rowcount
        if changed:
            self._settle(db, job_id, "cancelled", now)
        return changed

    def _settle(self, db: sqlite3.Connection, parent: int, status: str, now: float) -> None:
        """A job finished: its children run once nothing else holds them, or are cancelled."""
        children = [r[0] for r in db.execute(_CHILDREN, (parent,)).fetchall()]
        for child in children:
            if status == "done":
                db.execute(_RELEASE, {"child": child, "now": now})
            else:
                self._cancel_in(db, child, f"job {parent} it depends on was {status}", now)

    def requeue(self, job_ids: Sequence[int]) -> list[int]:
        now = time.time()

        def back(db: sqlite3.Connection) -> list[int]:
            return [
                job_id
                for job_id in job_ids
                if db.execute(_REQUEUE, {"job_id": job_id, "now": now}).rowcount
            ]

        done = self._write(back)
        if done:
            self._workers_bell.ring()
        return done

    def failed_ids(self) -> list[int]:
        rows = self.db.execute("SELECT job_id FROM jobs WHERE status = 'failed' ORDER BY job_id")
        return [row[0] for row in rows.fetchall()]

    def purge(self, status: Status, before: float) -> int:
        return self._write(
            lambda db: (
                db.execute(
                    "DELETE FROM jobs WHERE status = ? AND finished_time < ?",
                    (status.value, before),
                ).rowcount
            )
        )

    def purge_expired(self, now: float) -> int:
        ttl = self.settings.result_ttl
        values = {"now": now, "ttl": ttl, "limit": PURGE_BATCH}
        batches = _EXPIRED_BATCHES if ttl >= 0 else _EXPIRED_BATCHES[:1]

        def expired(db: sqlite3.Connection) -> list[int]:
            return [row[0] for sql in batches for row in db.execute(sql, values).fetchall()]

        if not expired(self.db):  # a look without the write lock: usually all there is
            return 0

        def delete(db: sqlite3.Connection) -> int:
            ids = expired(db)  # again, in the transaction: none requeued meanwhile
            sql = f"DELETE FROM jobs WHERE job_id IN ({', '.join('?' * len(ids))})"
            return db.execute(sql, ids).rowcount if ids else 0

        return self._write(delete)

    def busy(self, queues: Sequence[str] | None) -> bool:
        where = "" if queues is None else f" AND queue IN ({', '.join('?' * len(queues))})"
        row = self.db.execute(
            f"SELECT 1 FROM jobs WHERE status IN ('waiting', 'pending', 'running'){where} LIMIT 1",
            tuple(queues or ()),
        ).fetchone()
        return row is not None

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, n FROM counts").fetchall())

    def finished_since(self, since: float) -> int:
        (count,) = self.db.execute(
            "SELECT count(*) FROM jobs INDEXED BY jobs_finished"
            " WHERE status IN ('done', 'failed') AND finished_time >= ?",
            (since,),
        ).fetchone()
        return count

    def durations(self) -> Durations:
        rows = self.db.execute("SELECT n, seconds FROM durations ORDER BY bucket").fetchall()
        return Durations.from_counts([n for n, _ in rows], sum(seconds for _, seconds in rows))

    def waiter(self) -> Waiter:
        return _SQLiteWaiter(self._waiters_dir)

    # -- workers -----------------------------------------------------------------------

    def _claim_in(
        self, db: sqlite3.Connection, worker: WorkerId, now: float, limit: int
    ) -> list[Claim]:
        """Up to `limit` claims in the open transaction: one statement for a worker of
        one queue (the usual case), else one per claim, looking at each queue's head."""
        if limit <= 0:
            return []
        queues = self._queues(db)
        if not queues:
            return []
        if len(queues) > 1:
            claims = []
            while len(claims) < limit and (claim := self._claim_one(db, worker, now)) is not None:
                claims.append(claim)
            return claims
        values = self._claim_values(worker, now, queues)
        rows = db.execute(_CLAIM_MANY, {**values, "limit": limit}).fetchall()
        rows.sort(key=lambda row: claim_order(row[-2], row[-1], row[0]))
        return [Claim(r[0], r[1], r[2], r[3], r[4], now, None, *r[5:-2]) for r in rows]

    def _queues(self, db: sqlite3.Connection) -> list[str]:
        """The queues this worker takes: its own, or every queue ever submitted to."""
        if self.queues is not None:
            return list(self.queues)
        if self._all_queues is None:  # usually just the default one
            self._all_queues = [r[0] for r in db.execute("SELECT name FROM job_queues")]
        return self._all_queues

    def _claim_values(self, worker: WorkerId, now: float, queues: list[str]) -> dict[str, Any]:
        return {
            "now": now,
            "label": worker.label,
            "pid": worker.pid,
            "start": worker.start,
            "timeout": self.settings.timeout,
            "grace": LEASE_GRACE,
            "queue": queues[0] if queues else DEFAULT_QUEUE,
        }

    def _claim_one(self, db: sqlite3.Connection, worker: WorkerId, now: float) -> Claim | None:
        queues = self._queues(db)
        values = self._claim_values(worker, now, queues)
        if len(queues) == 1:  # the head of the one queue claimed in one statement
            row = db.execute(_CLAIM, values).fetchone()
        else:
            best = None  # (priority, -id): each queue's head, by its index
            for queue in queues:
                head = db.execute(_HEAD, {"queue": queue, "now": now}).fetchone()
                if head is not None and (best is None or (head[1], -head[0]) > best):
                    best = (head[1], -head[0])
            if best is None:
                return None
            row = db.execute(_CLAIM_ID, {**values, "job_id": -best[1]}).fetchone()
        if row is None:
            return None
        return Claim(row[0], row[1], row[2], row[3], row[4], now, None, *row[5:])

    def claim(self, worker: WorkerId, block: float) -> Claim | None:
        claims = self.claim_batch(worker, block, 1)
        return claims[0] if claims else None

    def claim_batch(self, worker: WorkerId, block: float, limit: int) -> list[Claim]:
        if self._sleeper is None:
            # bound before the first look, so a submit after it cannot go unheard
            self._sleeper = Sleeper(self._workers_dir)
        self._sleeper.drain()

        looked = 0.0  # when the last claim looked for due jobs

        def claim(db: sqlite3.Connection) -> list[Claim]:
            nonlocal looked
            looked = time.time()
            return self._claim_in(db, worker, looked, limit)

        claims = self._write(claim)
        if not claims and self._sleeper.wait(min(block, self._until_due(block, looked))):
            claims = self._write(claim)  # woken, by a submit most likely: its job at once
        return claims

    def interrupt(self) -> None:
        if self._sleeper is not None and self._sleeper.sock is not None:
            try:
                self._workers_bell.sock.sendto(b"!", str(self._sleeper.path))
            except OSError:
                pass  # full: it is about to wake anyway

    def _until_due(self, block: float, looked: float) -> float:
        """Seconds until the next pending job is due (a delayed job, a retry's backoff).

        Only jobs not yet due when the claim `looked` count: one due then, and of our
        queues, was claimed; one of other queues (or of a queue new since our list of
        them) is not ours to wake for, and would have us spin, waiting 0 s each turn."""
        (due,) = self.db.execute(
            "SELECT min(run_after) FROM jobs INDEXED BY jobs_by_status"
            " WHERE status = 'pending' AND run_after > ?",
            (looked,),
        ).fetchone()
        return block if due is None else max(0.0, due - time.time())

    def finish(
        self,
        worker: WorkerId,
        claim: Claim,
        output: int | str | None,
        error: str | None,
        claim_next: bool,
        retry_in: float | None = None,
    ) -> Claim | None:
        attempt = Attempt(claim, output, error, retry_in)
        following = self.finish_batch(worker, [attempt], 1 if claim_next else 0)
        return following[0] if following else None

    def finish_batch(
        self,
        worker: WorkerId,
        attempts: Sequence[Attempt],
        claim_next: int,
        release: Sequence[Claim] = (),
    ) -> list[Claim]:
        now = time.time()
        # the batch's done jobs go in one statement per kind of result, their values
        # encoded here, before the lock is taken; failures one at a time, as ever
        done, others = done_batches(attempts)

        def record(db: sqlite3.Connection) -> list[Claim]:
            for sql, batch in done:
                values = {"batch": batch, "now": now, "label": worker.label}
                for job_id, children in db.execute(sql, values).fetchall():
                    if children:
                        self._settle(db, job_id, "done", now)
            for attempt in others:
                self._record_in(db, worker, attempt, now)
            for claim in release:
                db.execute(_UNCLAIM, _fence(worker, claim))
            return self._claim_in(db, worker, now, claim_next)

        following = self._write(record)
        if attempts:
            self._waiters_bell.ring()
        if release:
            self._workers_bell.ring()
        return following

    def _record_in(
        self, db: sqlite3.Connection, worker: WorkerId, attempt: Attempt, now: float
    ) -> None:
        claim, error = attempt.claim, attempt.error
        fence = {**_fence(worker, claim), "started": attempt.started}
        if error is None:
            done = _DONE if claim.args is None else _DONE_JSON
            row = db.execute(done, {**fence, "output": attempt.output, "now": now}).fetchone()
            if row is not None and row[0]:
                self._settle(db, claim.job_id, "done", now)
        elif attempt.retry_in is not None:
            args = {**fence, "error": error, "run_after": now + attempt.retry_in, "now": now}
            db.execute(_RETRY, args)
        else:
            self._fail(db, fence, error, now)

    def _fail(self, db: sqlite3.Connection, fence: dict[str, Any], error: str, now: float) -> int:
        args = {**fence, "error": error, "now": now, "ttl": self.settings.result_ttl}
        failed = db.execute(_FAIL, args).rowcount
        if failed:
            self._settle(db, fence["job_id"], "failed", now)
        return failed

    def progress(self, worker: WorkerId, claim: Claim, fraction: float, meta: str | None) -> bool:
        fence = _fence(worker, claim)
        sql = f"UPDATE jobs SET progress = :progress, meta = :meta WHERE {_FENCE}"
        return bool(
            self._write(
                lambda db: db.execute(sql, {**fence, "progress": fraction, "meta": meta})
            ).rowcount
        )

    def recover(self, worker: WorkerId) -> int:
        now = time.time()
        self._all_queues = None  # looked up again: a new queue's jobs wait at most this long
        self.purge_expired(now)
        running = self.db.execute(
            "SELECT job_id, worker, worker_pid, worker_start, attempts, started_time,"
            " lease_until, max_attempts, timeout FROM jobs WHERE status = 'running'"
        ).fetchall()
        held = Counter(row["worker"] for row in running)  # more than one: a batch
        lost = []
        for row in running:
            if row["worker"] == worker.label:
                continue  # ours: we are alive, and hold it
            if not process_alive(row["worker_pid"], row["worker_start"]):
                timeout = row["timeout"] or self.settings.timeout
                why = death(row["worker"], held[row["worker"]], row["started_time"], timeout, now)
                lost.append((row, why))
            elif row["lease_until"] is not None and row["lease_until"] < now:
                lost.append((row, f"lease lapsed on worker {row['worker']}"))
        if not lost:
            return 0

        def requeue(db: sqlite3.Connection) -> int:
            taken = 0
            for row, error in lost:
                fence = {"job_id": row["job_id"], "label": row["worker"], "started": None}
                fence["attempts"] = row["attempts"]
                if row["attempts"] < (row["max_attempts"] or self.settings.max_attempts):
                    args = {**fence, "error": error, "run_after": now, "now": now}
                    taken += db.execute(_RETRY, args).rowcount
                else:
                    taken += self._fail(db, fence, error, now)
            return taken

        taken = self._write(requeue)
        self._workers_bell.ring()
        self._waiters_bell.ring()
        return taken

    def cancelled(self, claim: Claim) -> bool:
        row = self.db.execute("SELECT status FROM jobs WHERE job_id = ?", (claim.job_id,))
        return row.fetchone()[0] == Status.CANCELLED


def busy_delay(waited: float) -> float:
    """Seconds to sleep before looking at the write lock again, having waited `waited`.

    Another worker holds it for a batch, a fraction of a millisecond: looked at every
    BUSY_POLL at first, a waiter takes it soon after it is free (backing off from the
    start, it would sleep through several of those turns, and two workers would run
    little faster than one); a lock held long (a large submit, a migration) is looked
    at less and less often, up to every BUSY_POLL_MAX."""
    if waited < BUSY_FAST:
        return BUSY_POLL
    return min(BUSY_POLL_MAX, max(BUSY_POLL, waited / 4))


def done_batches(attempts: Sequence[Attempt]) -> tuple[list[tuple[str, str]], list[Attempt]]:
    """The done attempts as (statement, JSON batch) pairs, one per kind of result (an
    integer output, a JSON result), and the other attempts, recorded one at a time."""
    ints: list[Any] = []
    texts: list[Any] = []
    others = []
    for attempt in attempts:
        if attempt.error is not None:
            others.append(attempt)
            continue
        claim = attempt.claim
        entry = [claim.job_id, claim.attempts, attempt.output, attempt.started]
        (ints if claim.args is None else texts).append(entry)
    done = [
        (sql, json.dumps(batch))
        for sql, batch in ((_DONE_MANY, ints), (_DONE_MANY_JSON, texts))
        if batch
    ]
    return done, others


def claim_order(priority: int, queue: str, job_id: int) -> tuple[int, int, int]:
    """Where a claimed job stands in its batch, as one-at-a-time claims would have taken
    it: the others above priority 0 (highest first), then the plain jobs (the default
    queue's at priority 0), then the others at 0 or below; oldest first within each."""
    plain = priority == 0 and queue == DEFAULT_QUEUE
    part = 0 if priority > 0 else 1 if plain else 2
    return part, -priority, job_id


def death(worker: str, held: int, started: float | None, timeout: float, now: float) -> str:
    """Why a dead worker's attempt failed: its timeout (it was killed for it), or not.

    A worker holding a batch (`held` > 1) was killed for the one it ran, and which one
    that was is not recorded (held claims all carry the batch's start), so none is
    blamed: the timed-out job and those waiting behind it read the same."""
    if started is None or now - started < timeout:
        return f"worker {worker} died"
    if held > 1:
        return f"worker {worker} killed while holding {held} jobs (one of them timed out)"
    return f"timed out after {timeout:g}s (worker killed)"


def _row(job: NewJob, status: str, now: float) -> tuple[Any, ...]:
    """The values of `_INSERT`, in its order."""
    depends_on = json.dumps(job.depends_on) if job.depends_on else None
    return (
        status,
        job.function,
        job.input,
        job.mod,
        now,
        job.args,
        job.kwargs,
        job.priority,
        job.queue,
        job.run_after,
        depends_on,
        job.max_attempts,
        job.timeout,
        job.retry,
        job.result_ttl,
    )


def _fence(worker: WorkerId, claim: Claim) -> dict[str, Any]:
    """What a write about an attempt matches: the job, held by this worker, at this attempt."""
    return {"job_id": claim.job_id, "label": worker.label, "attempts": claim.attempts}


_CHILDREN = "DELETE FROM job_deps WHERE parent = ? RETURNING child"
_RELEASE = """
UPDATE jobs SET status = 'pending', run_after = max(run_after, :now)
WHERE job_id = :child AND status = 'waiting'
    AND NOT EXISTS (SELECT 1 FROM job_deps WHERE child = :child)
"""
_REQUEUE = """
UPDATE jobs SET status = 'pending', attempts = 0, run_after = :now, finished_time = NULL,
    lease_until = NULL
WHERE job_id = :job_id AND status = 'failed'
"""
# whether a row is past its result_ttl (get hides it until a worker deletes it)
_EXPIRED = """(finished_time IS NOT NULL AND coalesce(result_ttl, :ttl) >= 0
    AND finished_time + coalesce(result_ttl, :ttl) <= :now)"""
# the expired jobs, a batch at a time: of their own TTL, of the default's (done or
# failed, by the finish times' index; cancelled, by the status index)
_EXPIRED_BATCHES = (
    """SELECT job_id FROM jobs INDEXED BY jobs_own_ttl
    WHERE result_ttl >= 0 AND finished_time IS NOT NULL AND finished_time + result_ttl <= :now
    LIMIT :limit""",
    """SELECT job_id FROM jobs INDEXED BY jobs_finished
    WHERE status IN ('done', 'failed') AND finished_time <= :now - :ttl AND result_ttl IS NULL
    LIMIT :limit""",
    """SELECT job_id FROM jobs INDEXED BY jobs_by_status
    WHERE status = 'cancelled' AND finished_time <= :now - :ttl AND result_ttl IS NULL
    LIMIT :limit""",
)


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Rebuild the first version's jobs table into this one, in the open transaction.

    SQLite cannot drop a NOT NULL, so the table is copied: every row keeps its id, the
    AUTOINCREMENT counter is carried over (no id is ever reused), the old table's
    triggers are dropped first (so the copy leaves `counts` as it was) and recreated
    by the schema after. Keys and durations are tables of their own, kept as they are.
    """
    (sequence,) = db.execute(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'jobs'"
    ).fetchone()
    for trigger in ("jobs_inserted", "jobs_moved", "jobs_deleted", "jobs_durations"):
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    db.execute(_JOBS_TABLE.format(name="jobs_v2"))
    db.execute(f"INSERT INTO jobs_v2 ({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM jobs")
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_v2 RENAME TO jobs")
    db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'jobs'", (sequence,))
