"""procorch: run a set of services on one machine and keep them alive.

The job queue's API is exported lazily (`from procorch import Jobs, submit, job, ...`),
so `import procorch` (and every CLI start) stays free of sqlite3 and redis.
"""

from typing import Any

__version__ = "0.1.0"

_JOBS_API = (
    "Jobs",
    "JobError",
    "JobNotFound",
    "InvalidJob",
    "JobTimeout",
    "JobConflict",
    "StoreUnavailable",
    "StoreFull",
    "JobFailed",
    "submit",
    "get_job",
    "list_jobs",
    "wait_job",
    "cancel_job",
)


def __getattr__(name: str) -> Any:
    if name == "job":  # the decorator: registers a job function, imports no store
        from procorch.jobs.decorator import job

        return job
    if name in _JOBS_API:
        from procorch.jobs import api

        return getattr(api, name)
    raise AttributeError(f"module 'procorch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), *_JOBS_API, "job"]
