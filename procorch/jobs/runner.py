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
import time
from collections.abc import Callable

from procorch.config import MAX_INT64, JobsSettings
from procorch.jobs import context
from procorch.jobs.functions import Policy, Registry
from procorch.jobs.job import encoded
from procorch.jobs.store import Attempt, Claim, Store, WorkerId

Outcome = tuple[int | str | None, str | None]  # an attempt's (output, error)
TIMER_SLACK = 0.001  # seconds a job may run past its timeout before SIGALRM ends it


def rearm(armed: tuple[float, float] | None, now: float, timeout: float) -> bool:
    """Whether a job of `timeout` s starting `now` needs the timer set again: it is not
    set, or the one set at `armed` (when, for a job of what timeout) would end this job
    before its timeout, or more than TIMER_SLACK after it.

    The timer is set for the timeout and TIMER_SLACK: quick jobs of one batch share one
    setting (two system calls less per job), and each is still ended no sooner than its
    timeout and at most TIMER_SLACK later."""
    if armed is None:
        return True
    deadline = armed[0] + armed[1] + TIMER_SLACK
    return not now + timeout <= deadline <= now + timeout + TIMER_SLACK


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
        self._armed_at: tuple[float, float] | None = None  # (monotonic time, job timeout)

    def attempt(
        self,
        store: Store,
        claim: Claim,
        before: Callable[[], bool] | None = None,
        keep_armed: bool = False,
    ) -> Outcome:
        """(output, None) or (None, why it failed); `before` (the simulated work) may say
        the job was cancelled meanwhile. The output is an int for a Fibonacci-shaped
        job, else the result as JSON text. `keep_armed`: another job follows at once,
        and the timer may stay set for it (see `rearm`); the caller then `disarm`s it
        before anything else."""
        self._arm(claim.timeout or self.settings.timeout)
        finished = False
        try:
            if before is not None and not before():
                finished = True
                return None, "cancelled"  # dropped by the store's fence anyway
            if self.random.random() < self.settings.failure_rate:  # exact at 0.0 and 1.0
                raise SimulatedFailure("simulated failure (failure_rate)")
            function = self.registry.call(claim.function)
            if claim.args is None:
                output = self.fibonacci_shaped(claim, function)
                finished = True
                return output, None
            with context.running(store, self.me, claim):
                result = function(*json.loads(claim.args), **json.loads(claim.kwargs or "{}"))
            finished = True
            return encoded(result, f"the result of {claim.function}"), None
        except Exception as exc:  # a job's failure is the job's, never the worker's
            finished = True
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            if not (finished and keep_armed):
                self.disarm()

    def _arm(self, timeout: float) -> None:
        now = time.monotonic()
        if rearm(self._armed_at, now, timeout):
            signal.setitimer(signal.ITIMER_REAL, timeout + TIMER_SLACK)
            self._armed_at = (now, timeout)

    def disarm(self) -> None:
        """No job runs: no timer (a store write must never be cut short by one)."""
        if self._armed_at is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._armed_at = None

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
