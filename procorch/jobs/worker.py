"""The JobWorker service: claims jobs from the store and runs them, one at a time.

Each replica is a supervised process. An idle worker blocks on the store's wake-up
(a Unix datagram socket on SQLite, XREADGROUP BLOCK on Redis) for at most a
heartbeat interval, so a submitted job starts within a millisecond or so and the
heartbeat stays fresh. A job's timeout is an interval timer whose SIGALRM keeps its
default action: the process ends even if the job is stuck in C code, the supervisor
starts a replacement, and the replacement's first `recover` counts the attempt as
failed (timed out) and retries or fails the job.
"""

from __future__ import annotations

import importlib
import random
import signal
import time
from collections.abc import Callable

from procorch.config import MAX_INT64
from procorch.jobs.fib import fib
from procorch.jobs.job import DEFAULT_FUNCTION
from procorch.jobs.store import Claim, Store, WorkerId, open_store
from procorch.services.base import Service

RECOVER_EVERY = 0.5  # seconds between looks for dead workers' jobs and lapsed leases


class SimulatedFailure(Exception):
    """The configured `failure_rate` struck (the original's simulated workload)."""


class JobWorker(Service):
    def setup(self) -> None:
        self.settings = self.context.config.jobs
        self.store: Store = open_store(self.settings, self.context.run_dir)
        self.me = WorkerId.current(self.context.name, self.context.replica)
        self.functions: dict[str, Callable[[int, int], int]] = {DEFAULT_FUNCTION: fib}
        self.random = random.Random()
        # first thing: a predecessor killed mid-job (or by its timeout) left its job running
        self.store.recover(self.me)
        self.next_recover = time.monotonic() + RECOVER_EVERY

    def teardown(self) -> None:
        self.store.close()

    def stop(self) -> None:
        super().stop()
        if hasattr(self, "store"):  # a stop before setup finished has nothing to cut short
            self.store.interrupt()  # an idle worker stops now, not after its block

    def run(self) -> None:
        block = self.context.heartbeat_interval
        claim: Claim | None = None
        # a claimed job is always finished, even after SIGTERM: jobs are short, and a
        # job abandoned here would wait for the next `recover` to run again
        while claim is not None or not self.stopping:
            self.heartbeat()
            now = time.monotonic()
            if now >= self.next_recover:
                self.next_recover = now + RECOVER_EVERY
                self.store.recover(self.me)
            if claim is None:
                claim = self.store.claim(self.me, block)
                continue
            began = time.perf_counter()
            output, error = self.attempt(claim)
            # the status table's requests/errors columns count this replica's attempts
            self.stats.count_request(
                self.context.slot, time.perf_counter() - began, error is not None
            )
            claim = self.store.finish(self.me, claim, output, error, claim_next=not self.stopping)

    def attempt(self, claim: Claim) -> tuple[int | None, str | None]:
        """Run one attempt: (output, None) or (None, why it failed)."""
        signal.setitimer(signal.ITIMER_REAL, self.settings.timeout)
        try:
            if self.settings.delay and not self.simulate_work(claim):
                return None, "cancelled"  # dropped by the store's fence anyway
            if self.random.random() < self.settings.failure_rate:  # exact at 0.0 and 1.0
                raise SimulatedFailure("simulated failure (failure_rate)")
            output = self.function(claim.function)(claim.n, claim.mod)
            if isinstance(output, bool) or not isinstance(output, int):
                raise TypeError(f"{claim.function} returned {output!r}, not an integer")
            if not -MAX_INT64 - 1 <= output <= MAX_INT64:
                raise ValueError(f"{claim.function} returned {output}, beyond 64 bits")
            return output, None
        except Exception as exc:  # a job's failure is the job's, never the worker's
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def simulate_work(self, claim: Claim) -> bool:
        """Sleep `delay` in heartbeat-sized slices; False if the job was cancelled meanwhile."""
        end = time.monotonic() + self.settings.delay
        slice_ = self.context.heartbeat_interval
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, slice_))
            self.heartbeat()
            if left > slice_ and self.store.cancelled(claim):
                return False
        return True

    def function(self, name: str) -> Callable[[int, int], int]:
        """A job function by name: the built-in, or one the config's allow-list names."""
        if name not in self.functions:
            spec = self.settings.functions.get(name)
            if spec is None:  # only the config can name code: a job carries a name
                raise LookupError(f"job function {name!r} is not in [jobs.functions]")
            module, _, attr = spec.partition(":")
            self.functions[name] = getattr(importlib.import_module(module), attr)
        return self.functions[name]
