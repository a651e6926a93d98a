"""A service's own SQLite database in the run directory (`data/NAME.db`).

WAL mode with synchronous=NORMAL: a transaction is in the log when COMMIT returns, so a
kill -9 of the service (or of everything) loses nothing it acknowledged; only a power
loss can take the last transactions. Ids come from AUTOINCREMENT tables, so a deleted or
rolled-back id is never handed out again. Replicas of one service share the file;
SQLite's locks order their writes, and one connection per process is shared by its
request threads under a lock.
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


def _as_dict(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class Database:
    def __init__(self, run_dir: Path, name: str, schema: str) -> None:
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
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self.transaction() as db:
            for statement in schema.split(";"):
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
