"""The running job, as its function sees it: `procorch.jobs.current()`.

    from procorch.jobs import current

    def import_rows(path):
        for done, total in ...:
            current().progress(done / total, {"rows": done})

A worker runs one job at a time, so the current job is one per process, set by the
worker around each attempt. A progress report is written to the store at once,
fenced like a result: an attempt that is no longer the job's (cancelled, taken back)
writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from procorch.jobs.job import MAX_META, InvalidJob, encoded
from procorch.jobs.store import Claim, Store, WorkerId


@dataclass(frozen=True)
class Current:
    """The job running in this process."""

    store: Store
    worker: WorkerId
    claim: Claim

    @property
    def job_id(self) -> int:
        return self.claim.job_id

    @property
    def attempt(self) -> int:
        return self.claim.attempts

    def progress(self, fraction: float, meta: Any = None) -> bool:
        """Report progress from 0.0 to 1.0 and a small JSON `meta` (at most 64 KiB),
        readable by `job status`, the API and the gateway while the job runs. False if
        the job is no longer this attempt's (cancelled meanwhile, say)."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise InvalidJob(f"progress must be a number from 0.0 to 1.0, got {fraction!r}")
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise InvalidJob(f"progress must be from 0.0 to 1.0, got {fraction!r}")
        text = None if meta is None else encoded(meta, "progress meta", MAX_META)
        return self.store.progress(self.worker, self.claim, float(fraction), text)


_current: Current | None = None


def current() -> Current:
    """The job this code runs in; RuntimeError outside a job."""
    if _current is None:
        raise RuntimeError("procorch.jobs.current() is only known inside a running job")
    return _current


@contextmanager
def running(store: Store, worker: WorkerId, claim: Claim) -> Iterator[Current]:
    """The worker's: `claim` is the current job while the block runs."""
    global _current
    _current = Current(store, worker, claim)
    try:
        yield _current
    finally:
        _current = None
