"""Running one claimed attempt: the code the job names, under its timeout, as
`procorch.jobs.current()`; and what the attempt's outcome asks of the store (done, or
failed and tried again after a backoff, or failed for good).

Shared by the JobWorker service and burst mode, which differ only in how they loop.
A job's timeout is an interval timer whose SIGALRM keeps its default action: the
process ends even if the job is stuck in C code, and the attempt is counted as failed
(timed out) by the next `recover` of any worker.
"""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Callable

from procorch.config import MAX_INT64, JobsSettings
from procorch.jobs import context
from procorch.jobs.functions import Policy, Registry
from procorch.jobs.job import encoded
from procorch.jobs.store import Attempt, Claim, Store, WorkerId

Outcome = tuple[int | str | None, str | None]  # an attempt's (output, error)


class SimulatedFailure(Exception):
    """The configured `failure_rate` struck (the original's simulated workload)."""


def retry_in(settings: JobsSettings, claim: Claim, rand: Callable[[], float]) -> float | None:
    """Seconds before the failed attempt `claim` is tried again; None: it has failed for
    good. The job's own policy (kept with it at submission) or else `[jobs]`'s."""
    max_attempts = claim.max_attempts or settings.max_attempts
    if claim.attempts >= max_attempts:
        return None
    policy = Policy.of(settings)
    if claim.retry is not None:
        policy = policy.with_retry(json.loads(claim.retry))
    return policy.retry_in(claim.attempts, rand)


class Runner:
    """Runs one claimed attempt: the code the job names, under its timeout, with the
    job as `procorch.jobs.current()`. Shared by the JobWorker service and burst mode."""

    def __init__(self, settings: JobsSettings, registry: Registry, me: WorkerId) -> None:
        self.settings = settings
        self.registry = registry
        self.me = me
        self.random = random.Random()

    def attempt(
        self, store: Store, claim: Claim, before: Callable[[], bool] | None = None
    ) -> Outcome:
        """(output, None) or (None, why it failed); `before` (the simulated work) may say
        the job was cancelled meanwhile. The output is an int for a Fibonacci-shaped
        job, else the result as JSON text."""
        signal.setitimer(signal.ITIMER_REAL, claim.timeout or self.settings.timeout)
        try:
            if before is not None and not before():
                return None, "cancelled"  # dropped by the store's fence anyway
            if self.random.random() < self.settings.failure_rate:  # exact at 0.0 and 1.0
                raise SimulatedFailure("simulated failure (failure_rate)")
            function = self.registry.call(claim.function)
            if claim.args is None:
                return self.fibonacci_shaped(claim, function), None
            with context.running(store, self.me, claim):
                result = function(*json.loads(claim.args), **json.loads(claim.kwargs or "{}"))
            return encoded(result, f"the result of {claim.function}"), None
        except Exception as exc:  # a job's failure is the job's, never the worker's
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    @staticmethod
    def fibonacci_shaped(claim: Claim, function: Callable[[int, int], int]) -> int:
        output = function(claim.n, claim.mod)  # type: ignore[arg-type]
        if isinstance(output, bool) or not isinstance(output, int):
            raise TypeError(f"{claim.function} returned {output!r}, not an integer")
        if not -MAX_INT64 - 1 <= output <= MAX_INT64:
            raise ValueError(f"{claim.function} returned {output}, beyond 64 bits")
        return output

    def recorded(self, claim: Claim, outcome: Outcome, started: float) -> Attempt:
        """The attempt to record, with when it is tried again if it failed."""
        output, error = outcome
        again = None if error is None else retry_in(self.settings, claim, self.random.random)
        return Attempt(claim, output, error, again, started)
