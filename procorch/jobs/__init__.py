"""Jobs: a durable queue of F(n) mod m computations (and allow-listed user functions).

`Jobs` (api.py) is the interface for programs and the CLI; `JobWorker` (worker.py) the
supervised service that runs them; the stores (sqlite_store.py, redis_store.py) keep them.
Nothing heavy is imported here, so `import procorch.jobs` stays cheap.
"""

from procorch.jobs.job import InvalidJob, JobError, JobNotFound, JobTimeout, Status

__all__ = ["InvalidJob", "JobError", "JobNotFound", "JobTimeout", "Status"]
