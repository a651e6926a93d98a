"""The embedded store: `jobs.db` in the run directory (SQLite, WAL).

Claiming is atomic: `BEGIN IMMEDIATE` takes the single write lock, and one
`UPDATE … RETURNING` moves the oldest due pending job to running; a worker finishes
its job and claims the next in the same transaction, so a job costs one write
transaction in the worker and one (or a share of a batch) in the submitter.
Durability: WAL with synchronous=NORMAL (the default) loses nothing committed when
processes crash, since committed pages are in the OS's cache; synchronous=FULL also
fsyncs every commit, so committed jobs survive a power loss too.
A running job carries its worker's (pid, start time) and a lease; `recover` puts
back jobs whose worker is gone or whose lease lapsed.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from procorch.config import JobsSettings
from procorch.jobs.job import CANCELLABLE, FIELDS, Status, StoreFull, StoreUnavailable, backoff
from procorch.jobs.store import (
    DURATION_BUCKETS,
    KEY_TTL,
    Claim,
    Durations,
    Key,
    Store,
    Waiter,
    WorkerId,
    process_alive,
)
from procorch.jobs.wake import Bell, Sleeper

DB_NAME = "jobs.db"
LEASE_GRACE = 1.0  # a lease is the job's timeout and this: only a hung worker outlives it
BUSY_TIMEOUT = 30.0  # give up on the write lock after this long
_T = TypeVar("_T")
_PROCESS_WRITER = threading.Lock()  # see SQLiteStore._write

_SCHEMA = (
    # idempotency keys of submissions, written in the transaction that enqueues the jobs
    """
    CREATE TABLE IF NOT EXISTS job_keys (
        key TEXT PRIMARY KEY, job_ids TEXT NOT NULL, digest TEXT NOT NULL, created REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS job_keys_created ON job_keys (created)",
    """
    CREATE TABLE IF NOT EXISTS jobs (
        job_id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: an id is never reused
        status TEXT NOT NULL,
        function TEXT NOT NULL,
        input INTEGER NOT NULL,
        mod INTEGER NOT NULL,
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
        run_after REAL NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, job_id)",
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
_COLUMNS = ", ".join(FIELDS)
_CLAIM = """
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_time = :now,
    finished_time = NULL, worker = :label, worker_pid = :pid, worker_start = :start,
    lease_until = :lease
WHERE job_id = (
    SELECT job_id FROM jobs WHERE status = 'pending' AND run_after <= :now
    ORDER BY job_id LIMIT 1
)
RETURNING job_id, function, input, mod, attempts
"""
_FENCE = "job_id = :job_id AND status = 'running' AND worker = :label AND attempts = :attempts"
_DONE = f"""
UPDATE jobs SET status = 'done', output = :output, error = NULL, finished_time = :now,
    lease_until = NULL
WHERE {_FENCE}
"""
_RETRY = f"""
UPDATE jobs SET status = 'pending', error = :error, run_after = :run_after, lease_until = NULL
WHERE {_FENCE}
"""
_FAIL = f"""
UPDATE jobs SET status = 'failed', error = :error, finished_time = :now, lease_until = NULL
WHERE {_FENCE}
"""

_CANCEL = f"""
UPDATE jobs SET status = 'cancelled', finished_time = ?, lease_until = NULL
WHERE job_id = ? AND status IN ({", ".join("?" * len(CANCELLABLE))})
"""


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
        statuses = json.dumps([status.value for status in Status])
        for statement in _SCHEMA:
            db.execute(statement, (statuses,) if "?" in statement else ())
        # bound as parameters, the trigger compares with exactly Python's floats
        db.executemany(
            "INSERT OR IGNORE INTO durations VALUES (?, ?, 0, 0.0)",
            enumerate([*DURATION_BUCKETS, None]),
        )

    def close(self) -> None:
        if self._sleeper is not None:
            self._sleeper.close()
        self._workers_bell.close()
        self._waiters_bell.close()
        self.db.close()

    # -- transactions ----------------------------------------------------------------

    def _retrying(self, action: Callable[[], _T]) -> _T:
        delay = 0.0001
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

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

    def submit_many(self, jobs: list[tuple[str, int, int]], key: Key | None = None) -> list[int]:
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
            sql = (
                "INSERT INTO jobs (status, function, input, mod, init_time)"
                " VALUES ('pending', ?, ?, ?, ?) RETURNING job_id"
            )
            ids = [db.execute(sql, (f, n, m, now)).fetchone()[0] for f, n, m in jobs]
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

    def get(self, job_id: int) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def list(
        self, status: Status | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        where, args = ("WHERE status = ?", (status.value,)) if status else ("", ())
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY job_id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        (total,) = self.db.execute(f"SELECT count(*) FROM jobs {where}", args).fetchone()
        return [dict(row) for row in rows], total

    def cancel(self, job_id: int) -> dict[str, Any] | None:
        now = time.time()
        changed = self._write(lambda db: db.execute(_CANCEL, (now, job_id, *CANCELLABLE)).rowcount)
        if changed:
            self._waiters_bell.ring()
        return self.get(job_id)

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

    def _claim_in(self, db: sqlite3.Connection, worker: WorkerId, now: float) -> Claim | None:
        row = db.execute(
            _CLAIM,
            {
                "now": now,
                "label": worker.label,
                "pid": worker.pid,
                "start": worker.start,
                "lease": now + self.settings.timeout + LEASE_GRACE,
            },
        ).fetchone()
        if row is None:
            return None
        return Claim(row[0], row[1], row[2], row[3], row[4], now)

    def claim(self, worker: WorkerId, block: float) -> Claim | None:
        if self._sleeper is None:
            # bound before the first look, so a submit after it cannot go unheard
            self._sleeper = Sleeper(self._workers_dir)
        self._sleeper.drain()
        claim = self._write(lambda db: self._claim_in(db, worker, time.time()))
        if claim is None:
            self._sleeper.wait(min(block, self._until_due(block)))
        return claim

    def interrupt(self) -> None:
        if self._sleeper is not None and self._sleeper.sock is not None:
            try:
                self._workers_bell.sock.sendto(b"!", str(self._sleeper.path))
            except OSError:
                pass  # full: it is about to wake anyway

    def _until_due(self, block: float) -> float:
        """Seconds until the next retry is due (pending jobs whose backoff has not ended)."""
        (due,) = self.db.execute(
            "SELECT min(run_after) FROM jobs WHERE status = 'pending'"
        ).fetchone()
        return block if due is None else max(0.0, due - time.time())

    def finish(
        self,
        worker: WorkerId,
        claim: Claim,
        output: int | None,
        error: str | None,
        claim_next: bool,
    ) -> Claim | None:
        now = time.time()
        fence = {"job_id": claim.job_id, "label": worker.label, "attempts": claim.attempts}

        def record(db: sqlite3.Connection) -> Claim | None:
            if error is None:
                db.execute(_DONE, {**fence, "output": output, "now": now})
            elif claim.attempts < self.settings.max_attempts:
                run_after = now + backoff(claim.attempts)
                db.execute(_RETRY, {**fence, "error": error, "run_after": run_after})
            else:
                db.execute(_FAIL, {**fence, "error": error, "now": now})
            return self._claim_in(db, worker, now) if claim_next else None

        following = self._write(record)
        self._waiters_bell.ring()
        return following

    def recover(self, worker: WorkerId) -> int:
        now = time.time()
        running = self.db.execute(
            "SELECT job_id, worker, worker_pid, worker_start, attempts, started_time,"
            " lease_until FROM jobs WHERE status = 'running'"
        ).fetchall()
        lost = []
        for row in running:
            if row["worker"] == worker.label:
                continue  # ours: we are alive, and hold it
            if not process_alive(row["worker_pid"], row["worker_start"]):
                lost.append((row, self._death(row, now)))
            elif row["lease_until"] is not None and row["lease_until"] < now:
                lost.append((row, f"lease lapsed on worker {row['worker']}"))
        if not lost:
            return 0

        def requeue(db: sqlite3.Connection) -> int:
            taken = 0
            for row, error in lost:
                fence = {"job_id": row["job_id"], "label": row["worker"]}
                fence["attempts"] = row["attempts"]
                if row["attempts"] < self.settings.max_attempts:
                    args = {**fence, "error": error, "run_after": now}
                    taken += db.execute(_RETRY, args).rowcount
                else:
                    taken += db.execute(_FAIL, {**fence, "error": error, "now": now}).rowcount
            return taken

        taken = self._write(requeue)
        self._workers_bell.ring()
        self._waiters_bell.ring()
        return taken

    def _death(self, row: sqlite3.Row, now: float) -> str:
        """Why a dead worker's attempt failed: its timeout (it was killed for it), or not."""
        if row["started_time"] is not None and now - row["started_time"] >= self.settings.timeout:
            return f"timed out after {self.settings.timeout:g}s (worker killed)"
        return f"worker {row['worker']} died"

    def cancelled(self, claim: Claim) -> bool:
        row = self.db.execute("SELECT status FROM jobs WHERE job_id = ?", (claim.job_id,))
        return row.fetchone()[0] == Status.CANCELLED
