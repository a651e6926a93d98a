"""A service's own SQLite database in the run directory (`data/NAME.db`).

WAL mode. With synchronous=NORMAL (the default) a transaction is in the log when COMMIT
returns, so a kill -9 of the service (or of everything) loses nothing it acknowledged,
but a power loss can take the last transactions, and with them the last ids handed
out: AUTOINCREMENT's counter is rolled back with them. With synchronous=FULL
(`[procorch] synchronous = "full"`) each COMMIT waits for the disk, and a power loss
loses nothing acknowledged. Ids come from AUTOINCREMENT tables, so a deleted or
rolled-back id is never handed out again. Replicas of one service share the file;
SQLite's locks order their writes, and one connection per process is shared by its
request threads under a lock.

Every service database also has the table `idempotency`: the replies of requests that
carried an idempotency key, each written in the same transaction as what the request
created (see `base.Service.commit`), so a record never exists without its key nor a key
without its record, whatever is killed when.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Row = dict[str, Any]
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}  # the config's word -> SQLite's

# `scope` is the sender's name (the gateway, a service, the CLI): one caller's keys cannot
# collide with another's. `reply` is the reply's data as JSON; `created_at` is Unix time,
# from which the retention is counted (an index, as the purge looks for the oldest).
# WITHOUT ROWID: the rows live in the key's own B-tree, one fewer to write per key.
IDEMPOTENCY_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    action TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    reply TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created_at)
"""
# A key's row unless it is older than the retention (a purge may not have run yet).
FIND_KEY = (
    "SELECT action, request_hash, reply FROM idempotency "
    "WHERE scope = ? AND key = ? AND created_at >= ?"
)
# REPLACE: the row it replaces, if any, is past the retention (FIND_KEY found nothing).
KEEP_KEY = (
    "INSERT OR REPLACE INTO idempotency (scope, key, action, request_hash, reply, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
PURGE_KEYS = "DELETE FROM idempotency WHERE created_at < ?"


def _as_dict(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class Database:
    def __init__(self, run_dir: Path, name: str, schema: str, synchronous: str = "normal") -> None:
        folder = run_dir / "data"
        folder.mkdir(mode=0o700, exist_ok=True)
        self.path = folder / f"{name}.db"
        # created owner-only by us: SQLite gives its -wal and -shm files the same mode
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = _as_dict
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[synchronous]}")
        with self.transaction() as db:
            for statement in f"{schema};{IDEMPOTENCY_SCHEMA}".split(";"):
                if statement.strip():
                    db.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed on success, rolled back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
