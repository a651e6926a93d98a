"""The JobWorker service: claims jobs from the store and runs them, one at a time.

Each replica is a supervised process. An idle worker blocks on the store's wake-up
(a Unix datagram socket on SQLite, XREADGROUP BLOCK on Redis) for at most a
heartbeat interval, so a submitted job starts within a millisecond or so and the
heartbeat stays fresh. A job's timeout is an interval timer whose SIGALRM keeps its
default action: the process ends even if the job is stuck in C code, the supervisor
starts a replacement, and the replacement's first `recover` counts the attempt as
failed (timed out) and retries or fails the job.

A full store (the disk under jobs.db, or Redis at its maxmemory) is the store's trouble,
not the worker's: the worker logs it once, keeps heartbeating and tries again with
backoff, holding on to a finished job's result until the store takes it; jobs carry on
by themselves once there is room. Crashing instead would only crash-loop.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

from procorch.config import MAX_INT64, JobsSettings
from procorch.jobs import context
from procorch.jobs.backend import open_store
from procorch.jobs.functions import Policy, Registry
from procorch.jobs.job import StoreFull, StoreUnavailable, backoff, encoded
from procorch.jobs.store import Claim, Store, WorkerId
from procorch.services.base import Service

RECOVER_EVERY = 0.5  # seconds between looks for dead workers' jobs and lapsed leases
FULL_RETRY_MAX = 2.0  # seconds at most between two tries of a full store

log = logging.getLogger("procorch.jobs.worker")
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

    def finish(
        self, store: Store, claim: Claim, outcome: Outcome, claim_next: bool
    ) -> Claim | None:
        output, error = outcome
        again = None if error is None else retry_in(self.settings, claim, self.random.random)
        return store.finish(self.me, claim, output, error, claim_next, again)


class JobWorker(Service):
    def setup(self) -> None:
        config = self.context.config
        self.settings = config.jobs
        self.me = WorkerId.current(self.context.name, self.context.replica)
        base = None if config.path is None else Path(config.path).parent
        self.runner = Runner(self.settings, Registry(self.settings, base), self.me)
        try:
            self.queues = config.service(self.context.name).queues
        except KeyError:
            self.queues = None
        self.store: Store | None = None
        try:
            self.store = self.open()
        except StoreFull:
            pass  # the run loop opens it once there is room, and says why meanwhile
        # first thing in the loop: a predecessor killed mid-job (or by its timeout) left
        # its job running
        self.next_recover = 0.0
        self.claim: Claim | None = None
        self.outcome: Outcome | None = None  # the claim's attempt, until the store has it
        self.full_since: float | None = None  # when the store was found full, while it is
        self.full_tries = 0

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()

    def stop(self) -> None:
        super().stop()
        store = getattr(self, "store", None)  # a stop before setup finished: nothing to cut
        if store is not None:
            store.interrupt()  # an idle worker stops now, not after its block

    def run(self) -> None:
        # a claimed job is always finished, even after SIGTERM: jobs are short, and a
        # job abandoned here would wait for the next `recover` to run again
        while self.claim is not None or not self.stopping:
            self.heartbeat()
            try:
                self.step()
            except StoreFull as exc:
                if self.stopping and self.claim is not None:
                    log.warning(
                        "stopping without recording job %d's result (%s);"
                        " the job runs again once the store has room",
                        self.claim.job_id,
                        exc,
                    )
                    return
                self.wait_for_room(exc)
                continue
            if self.full_since is not None:
                waited = time.monotonic() - self.full_since
                log.info("the job store has room again (after %.1fs); carrying on", waited)
                self.full_since = None

    def step(self) -> None:
        """One turn of the loop: claim a job, or run the claimed one, record its outcome
        and claim the next. Raises StoreFull with nothing lost: a claim the store refused
        was not made, and a refused outcome stays in `self.outcome`, to record, not rerun."""
        if self.store is None:
            self.store = self.open()
        now = time.monotonic()
        if now >= self.next_recover:
            self.store.recover(self.me)
            self.next_recover = now + RECOVER_EVERY
        if self.claim is None:
            self.claim = self.store.claim(self.me, self.context.heartbeat_interval)
            return
        if self.outcome is None:
            began = time.perf_counter()
            claim = self.claim
            work = (lambda: self.simulate_work(claim)) if self.settings.delay else None
            self.outcome = self.runner.attempt(self.store, claim, work)
            # the status table's requests/errors columns count this replica's attempts
            failed = self.outcome[1] is not None
            self.stats.count_request(self.context.slot, time.perf_counter() - began, failed)
        self.claim = self.runner.finish(
            self.store, self.claim, self.outcome, claim_next=not self.stopping
        )
        self.outcome = None

    def open(self) -> Store:
        store = open_store(self.settings, self.context.run_dir)
        store.queues = self.queues
        return store

    def wait_for_room(self, exc: StoreFull) -> None:
        """Back off while the store is full, heartbeating: the replica is healthy, and a
        restart would not make room. Said once, when it starts; tried again at most
        FULL_RETRY_MAX s later, so jobs carry on soon after room is made."""
        if self.full_since is None:
            self.full_since, self.full_tries = time.monotonic(), 0
            held = "" if self.claim is None else f"; job {self.claim.job_id} stays claimed"
            log.warning("%s; retrying until it has room%s", exc, held)
        self.full_tries += 1
        end = time.monotonic() + min(FULL_RETRY_MAX, backoff(self.full_tries))
        while not self.stopping and (left := end - time.monotonic()) > 0:
            self.heartbeat()
            self._stopping.wait(min(left, self.context.heartbeat_interval))

    def simulate_work(self, claim: Claim) -> bool:
        """Sleep `delay` in heartbeat-sized slices; False if the job was cancelled meanwhile."""
        end = time.monotonic() + self.settings.delay
        slice_ = self.context.heartbeat_interval
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, slice_))
            self.heartbeat()
            if left > slice_ and self.cancelled(claim):
                return False
        return True

    def cancelled(self, claim: Claim) -> bool:
        """Whether the job was cancelled; a store that cannot say (full, unreachable) is
        taken as no: the store's fence drops the result of a cancelled job anyway."""
        assert self.store is not None
        try:
            return self.store.cancelled(claim)
        except StoreUnavailable:
            return False
