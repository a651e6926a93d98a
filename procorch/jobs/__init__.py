"""Jobs: a durable queue of registered functions with JSON arguments (and F(n) mod m).

`Jobs` (api.py) is the interface for programs and the CLI; `JobWorker` (worker.py) the
supervised service that runs them, burst.py the same without a daemon; `job.py` the
record and its states; functions.py the registry of runnable names and their policy;
context.py the running job's `current()`; the stores (store.py the interface,
sqlite_store.py, redis_store.py, chosen by backend.py) keep them; wake.py wakes
sleepers without polling; fib.py is the built-in job; decorator.py is `@procorch.job`.
Nothing is imported here until asked for, so the CLI's start stays cheap.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "current":
        from procorch.jobs.context import current

        return current
    raise AttributeError(f"module 'procorch.jobs' has no attribute {name!r}")
