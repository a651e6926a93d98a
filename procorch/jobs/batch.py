"""A worker's jobs between two writes to the store: how many it claims at once, and
when it records what it ran. Shared by the JobWorker service and burst mode.

A write transaction costs more than a trivial job (on SQLite a commit is about 50 µs,
most of what a no-op job costs end to end), so a worker whose recent jobs were quick
claims several in one transaction, runs them one after another, and records their
outcomes together with its next claims in one more. The batch grows as a TCP sender's
window does, doubling while the jobs stay quick, up to what runs in BATCH_BUDGET at
the slowest one's pace, and falls back to one job as soon as one is slow. So a result
waits about BATCH_BUDGET at most before it is recorded, and a job waits behind at most
one slow job: claims held longer than HOLD_MAX without being started, and every held
claim when the worker stops, go back to the queue unrun, their attempt not counted.
A worker killed while holding claims has them all taken back by `recover`, as its
running job (each counted as an attempt, as that job's is).
A store that holds one lease per worker (Redis) claims one job at a time: batches of
one, and the job it holds is run, even by a worker that stops.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from procorch.jobs.runner import Runner
from procorch.jobs.store import Attempt, Claim, Store

BATCH_BUDGET = 0.002  # seconds of work a batch aims at
MAX_BATCH = 32  # claims per transaction at most: beyond, a commit is a sliver of the cost
HOLD_MAX = 0.05  # seconds a claim may wait unstarted before it goes back to the queue


def next_size(previous: int, slowest: float | None) -> int:
    """The next batch's size after one of `previous` claims whose slowest job ran
    `slowest` s (None: none ran): double it while that many such jobs fit the budget,
    down to one after a slow job."""
    if slowest is None:
        return previous
    fits = int(BATCH_BUDGET / slowest) if slowest > 0 else MAX_BATCH
    return max(1, min(MAX_BATCH, previous * 2, fits))


class Batch:
    """The claims a worker holds (claimed, not yet run) and the attempts it ran (not
    yet recorded). A store error (StoreFull) leaves both as they were: the same step
    is tried again later, and nothing run is run twice."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.held: deque[Claim] = deque()
        self.ran: list[Attempt] = []
        self.size = 1
        self.slowest: float | None = None  # of the attempts in `ran`
        self.claimed_at = 0.0  # monotonic time of the claims in `held`

    def __len__(self) -> int:
        """Jobs held or run and not yet recorded."""
        return len(self.held) + len(self.ran)

    @property
    def empty(self) -> bool:
        return not self.held and not self.ran

    def step(
        self,
        store: Store,
        block: float,
        stopping: bool,
        before: Callable[[Claim], bool] | None = None,
    ) -> tuple[Attempt, float] | None:
        """One turn: claim a batch (blocking up to `block` s for one), or run the next
        held claim, or record what ran and claim the next batch (none when `stopping`).
        The attempt run and how long it took, if one ran."""
        if self.held and not self._hand_back(store, stopping):
            return self._run_next(store, before)
        self.runner.disarm()  # no job runs next: the store's turn, never cut by a timer
        if self.empty:
            if not stopping:
                self._hold(store.claim_batch(self.runner.me, block, self.size))
            return None
        size = next_size(self.size, self.slowest)
        following = store.finish_batch(
            self.runner.me, self.ran, 0 if stopping else size, release=list(self.held)
        )
        self.size, self.slowest = size, None
        self.ran.clear()
        self.held.clear()
        self._hold(following)
        return None

    def _hand_back(self, store: Store, stopping: bool) -> bool:
        """Whether the held claims go back to the queue now, unrun: the worker stops, or
        they waited too long behind jobs of their batch. A store that claims one job at
        a time holds none behind another, and runs the one it holds, as it always did."""
        if not store.batches:
            return False
        return stopping or (bool(self.ran) and time.monotonic() - self.claimed_at > HOLD_MAX)

    def _hold(self, claims: list[Claim]) -> None:
        self.held.extend(claims)
        self.claimed_at = time.monotonic()

    def _run_next(
        self, store: Store, before: Callable[[Claim], bool] | None
    ) -> tuple[Attempt, float]:
        claim = self.held.popleft()
        started = time.time()
        began = time.perf_counter()
        work = None if before is None else (lambda: before(claim))
        # the next held claim runs right after (unless handed back: `step` disarms)
        outcome = self.runner.attempt(store, claim, work, keep_armed=bool(self.held))
        seconds = time.perf_counter() - began
        self.slowest = seconds if self.slowest is None else max(self.slowest, seconds)
        attempt = self.runner.recorded(claim, outcome, started)
        self.ran.append(attempt)
        return attempt, seconds
