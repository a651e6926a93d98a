"""The Huey application of the jobs benchmark: SqliteHuey and its two tasks.

The consumer imports `hueyapp.huey` (`huey_consumer hueyapp.huey ...`), its database named
by BENCH_HUEY_DB; the harness makes its own client with `make(filename)` for the same file.
Results are stored even when None (`store_none`), so every finished task counts.
"""

from __future__ import annotations

import os
from typing import Any

from harness.jobnoop import noop
from huey import SqliteHuey

from jobs.jobfib import fib

DB_ENV = "BENCH_HUEY_DB"


def make(filename: str) -> tuple[SqliteHuey, dict[str, Any]]:
    """The Huey instance on `filename` and its tasks by name ("fib", "noop")."""
    huey = SqliteHuey("bench", filename=filename, store_none=True)
    tasks = {"fib": huey.task(name="fib")(fib), "noop": huey.task(name="noop")(noop)}
    return huey, tasks


if DB_ENV in os.environ:  # the consumer's import
    huey, tasks = make(os.environ[DB_ENV])
