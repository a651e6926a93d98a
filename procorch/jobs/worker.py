"""The JobWorker service: claims jobs from the store and runs them, one at a time.

Each replica is a supervised process. An idle worker blocks on the store's wake-up
(a Unix datagram socket on SQLite, a blocking pop on Redis) for at most a heartbeat
interval, so a submitted job starts within a millisecond or so and the heartbeat
stays fresh. Quick jobs are claimed and recorded in batches (`batch.py`). A job's
timeout ends the worker's process (`runner.py`); the supervisor starts a replacement,
and the replacement's first `recover` counts the attempt as failed (timed out) and
retries or fails the job.

A full store (the disk under jobs.db, or Redis at its maxmemory) is the store's trouble,
not the worker's: the worker logs it once, keeps heartbeating and tries again with
backoff, holding on to a finished job's result until the store takes it; jobs carry on
by themselves once there is room. Crashing instead would only crash-loop.
"""

from __future__ import annotations

import logging
import time

from procorch.jobs.backend import open_store
from procorch.jobs.batch import Batch
from procorch.jobs.functions import Registry, modules_base
from procorch.jobs.job import StoreFull, StoreUnavailable, backoff
from procorch.jobs.runner import Runner
from procorch.jobs.store import Claim, Store, WorkerId
from procorch.services.base import Service

RECOVER_EVERY = 0.5  # seconds between looks for dead workers' jobs and lapsed leases
FULL_RETRY_MAX = 2.0  # seconds at most between two tries of a full store

log = logging.getLogger("procorch.jobs.worker")


class JobWorker(Service):
    def setup(self) -> None:
        config = self.context.config
        self.settings = config.jobs
        self.me = WorkerId.current(self.context.name, self.context.replica)
        registry = Registry(self.settings, modules_base(config))
        self.runner = Runner(self.settings, registry, self.me)
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
        self.batch = Batch(self.runner)  # what it holds and ran, until the store has it
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
        # what ran is always recorded and what is held handed back, even after SIGTERM:
        # abandoned, they would wait for another worker's `recover` to run again
        while not self.batch.empty or not self.stopping:
            self.heartbeat()
            try:
                self.step()
            except StoreFull as exc:
                if self.stopping and not self.batch.empty:
                    log.warning(
                        "stopping without recording %d job(s) (%s);"
                        " they run again once the store has room",
                        len(self.batch),
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
        """One turn of the loop (see `Batch.step`). Raises StoreFull with nothing lost:
        a claim the store refused was not made, and a refused outcome stays in the
        batch, to record, not rerun."""
        if self.store is None:
            self.store = self.open()
        now = time.monotonic()
        if now >= self.next_recover:
            self.runner.disarm()  # a job's timer, kept for the next of its batch, ends no write
            self.store.recover(self.me)
            self.next_recover = now + RECOVER_EVERY
        work = self.simulate_work if self.settings.delay else None
        ran = self.batch.step(self.store, self.context.heartbeat_interval, self.stopping, work)
        if ran is not None:
            # the status table's requests/errors columns count this replica's attempts
            attempt, seconds = ran
            self.stats.count_request(self.context.slot, seconds, attempt.error is not None)

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
            held = f"; {len(self.batch)} job(s) stay claimed" if self.batch else ""
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
