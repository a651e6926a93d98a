"""Claims and records in batches: the size rule alone, then on a real jobs.db, with a
real worker process killed while it holds a batch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from procorch.config import JobsSettings
from procorch.jobs.batch import HOLD_MAX, MAX_BATCH, Batch, next_size
from procorch.jobs.functions import Registry
from procorch.jobs.runner import TIMER_SLACK, Runner, rearm
from procorch.jobs.sqlite_store import (
    BUSY_FAST,
    BUSY_POLL,
    BUSY_POLL_MAX,
    SQLiteStore,
    busy_delay,
    claim_order,
    death,
    done_batches,
)
from procorch.jobs.store import Attempt, Claim, NewJob, WorkerId

QUICK = 0.00001  # seconds: a no-op job's pace


def test_a_batch_doubles_while_jobs_are_quick_up_to_the_cap():
    sizes = [1]
    for _ in range(7):
        sizes.append(next_size(sizes[-1], QUICK))
    assert sizes == [1, 2, 4, 8, 16, 32, 32, 32]
    assert MAX_BATCH == 32


def test_a_slow_job_drops_the_batch_to_what_fits_the_budget():
    assert next_size(32, 0.01) == 1  # slower than the whole budget: one at a time
    assert next_size(32, 0.0005) == 4  # four such jobs fit 2 ms
    assert next_size(2, 0.0005) == 4  # and it still grows no faster than doubling
    assert next_size(8, None) == 8  # nothing ran (all handed back): unchanged


@pytest.fixture
def store(tmp_path):
    settings = JobsSettings(functions={"nap": {"target": "time:sleep"}})
    store = SQLiteStore(settings, tmp_path)
    yield store
    store.close()


def naps(store: SQLiteStore, *seconds: float, priority: int = 0) -> list[int]:
    jobs = [NewJob("nap", args=json.dumps([s]), kwargs="{}", priority=priority) for s in seconds]
    return store.submit_many(jobs)


def test_a_batch_is_claimed_in_priority_order_up_to_its_limit(store):
    low = naps(store, 0, 0, 0)
    high = naps(store, 0, priority=5)
    me = WorkerId.current("W", 0)
    claims = store.claim_batch(me, 0, 3)
    assert [c.job_id for c in claims] == [*high, *low[:2]]
    assert {store.get(c.job_id)["status"] for c in claims} == {"running"}
    assert store.get(low[2])["status"] == "pending"


def test_one_write_records_a_batch_hands_back_the_unstarted_and_claims_more(store):
    ids = naps(store, 0, 0, 0, 0, 0, 0)
    me = WorkerId.current("W", 0)
    first = store.claim_batch(me, 0, 4)
    began = time.time() - 5  # as if the first attempt began 5 s ago
    ran = [Attempt(first[0], "null", None, None, began), Attempt(first[1], None, "boom", None)]
    following = store.finish_batch(me, ran, claim_next=1, release=first[2:])
    done, failed = store.get(ids[0]), store.get(ids[1])
    assert (done["status"], failed["status"], failed["error"]) == ("done", "failed", "boom")
    assert done["finished_time"] - done["started_time"] >= 5  # the attempt's own start
    assert store.durations().sum >= 5
    # handed back: pending again, the attempt not counted, first in line once more
    assert [c.job_id for c in following] == [ids[2]]
    assert following[0].attempts == 1
    released = store.get(ids[3])
    assert (released["status"], released["attempts"], released["worker"]) == ("pending", 0, None)
    other = WorkerId.current("W", 1)
    assert [c.job_id for c in store.claim_batch(other, 0, 8)] == ids[3:]


def test_a_result_is_fenced_in_a_batch_as_alone(store):
    (job_id,) = naps(store, 0)
    me = WorkerId.current("W", 0)
    (claim,) = store.claim_batch(me, 0, 1)
    store.cancel(job_id)
    store.finish_batch(me, [Attempt(claim, "null", None)], claim_next=0)
    assert store.get(job_id)["status"] == "cancelled"


def runner(store: SQLiteStore) -> Runner:
    return Runner(store.settings, Registry(store.settings), WorkerId.current("W", 0))


def test_claims_held_behind_a_slow_job_go_back_unrun(store):
    slow = HOLD_MAX * 2
    ids = naps(store, slow, 0, 0, 0)
    batch = Batch(runner(store))
    batch.size = 4
    batch.step(store, 0, stopping=False)  # claims all four
    assert len(batch.held) == 4
    attempt, seconds = batch.step(store, 0, stopping=False)  # runs the slow one
    assert attempt.claim.job_id == ids[0] and seconds >= slow
    batch.step(store, 0, stopping=False)  # held too long: recorded, the rest handed back
    assert store.get(ids[0])["status"] == "done"
    assert batch.size == 1  # and the next batch is one job
    assert [c.job_id for c in batch.held] == [ids[1]]
    assert [store.get(i)["attempts"] for i in ids[1:]] == [1, 0, 0]
    while not batch.empty:
        batch.step(store, 0, stopping=False)
    assert [store.get(i)["status"] for i in ids] == ["done"] * 4
    assert [store.get(i)["attempts"] for i in ids] == [1] * 4  # none ran twice


def test_a_stopping_worker_records_what_ran_and_hands_back_the_rest(store):
    ids = naps(store, 0, 0, 0)
    batch = Batch(runner(store))
    batch.size = 3
    batch.step(store, 0, stopping=False)
    batch.step(store, 0, stopping=False)  # one ran
    batch.step(store, 0, stopping=True)
    assert batch.empty
    assert [store.get(i)["status"] for i in ids] == ["done", "pending", "pending"]


def test_a_batch_waiting_before_its_first_job_is_not_handed_back(store):
    ids = naps(store, 0, 0)
    batch = Batch(runner(store))
    batch.size = 2
    batch.step(store, 0, stopping=False)
    time.sleep(HOLD_MAX * 2)  # a slow turn of the loop, say: nothing of it ran yet
    batch.step(store, 0, stopping=False)
    batch.step(store, 0, stopping=False)
    assert [store.get(i)["attempts"] for i in ids] == [1, 1]


def test_on_redis_a_worker_holds_one_job_and_runs_it_even_when_stopping(tmp_path, redis_url):
    from procorch.jobs.redis_store import RedisStore

    settings = JobsSettings(backend=redis_url, functions={"nap": {"target": "time:sleep"}})
    redis_store = RedisStore(settings, tmp_path)
    try:
        ids = naps(redis_store, 0, 0)
        batch = Batch(runner(redis_store))
        batch.size = 8
        batch.step(redis_store, 0, stopping=False)
        assert len(batch.held) == 1
        while not batch.empty:
            batch.step(redis_store, 0, stopping=True)
        assert [redis_store.get(i)["status"] for i in ids] == ["done", "pending"]
    finally:
        redis_store.close()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from procorch.config import JobsSettings
    from procorch.jobs.sqlite_store import SQLiteStore, death
    from procorch.jobs.store import WorkerId
    store = SQLiteStore(JobsSettings(), Path(sys.argv[1]))
    claims = store.claim_batch(WorkerId.current("Holder", 0), 0, int(sys.argv[2]))
    print(len(claims), flush=True)
    time.sleep(60)
    """
)


def test_a_worker_killed_holding_a_batch_has_every_claim_back_within_a_second(store, tmp_path):
    ids = naps(store, 0, 0, 0, 0, 0)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "5"
        assert {store.get(i)["status"] for i in ids} == {"running"}
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        killed = time.monotonic()
        taken = store.recover(WorkerId.current("W", 0))
        assert time.monotonic() - killed < 1.0
    finally:
        holder.kill()
        holder.wait()
    assert taken == 5
    jobs = [store.get(i) for i in ids]
    assert {job["status"] for job in jobs} == {"pending"}
    assert all("Holder.0" in job["error"] and "died" in job["error"] for job in jobs)


@pytest.mark.parametrize("size", [3, 1])
def test_a_worker_killed_by_a_timeout_blames_no_job_of_its_batch(store, tmp_path, size):
    """Which of a batch's claims was running when the timeout struck is not known: the
    error says so, for each; a worker that held one job says that job timed out."""
    timeout = 0.1
    jobs = [NewJob("nap", args="[0]", kwargs="{}", timeout=timeout) for _ in range(size)]
    ids = store.submit_many(jobs)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), str(size)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == str(size)
        claimed = max(store.get(i)["started_time"] for i in ids)
        time.sleep(max(0.0, claimed + timeout - time.time()))  # past the timeout, as SIGALRM
    finally:
        holder.kill()
        holder.wait()
    assert store.recover(WorkerId.current("W", 0)) == size
    errors = {store.get(i)["error"] for i in ids}
    if size == 1:
        assert errors == {"timed out after 0.1s (worker killed)"}
    else:
        (error,) = errors
        assert re.fullmatch(
            r"worker .+:Holder\.0:\d+ killed while holding 3 jobs \(one of them timed out\)", error
        )


def test_the_reason_of_a_dead_worker_blames_a_job_only_when_it_held_that_one_alone():
    assert death("h:W.0:7", 1, 100.0, 5, 106) == "timed out after 5s (worker killed)"
    assert death("h:W.0:7", 4, 100.0, 5, 106) == (
        "worker h:W.0:7 killed while holding 4 jobs (one of them timed out)"
    )
    assert (
        death("h:W.0:7", 4, 100.0, 5, 104)
        == death("h:W.0:7", 1, None, 5, 0)
        == ("worker h:W.0:7 died")
    )


def test_a_worker_of_some_queues_waits_out_its_block_beside_another_queues_due_job(store):
    """A due job of a queue it does not take is no reason to wake: it would spin."""
    store.submit_many([NewJob("nap", args="[0]", kwargs="{}", queue="other")])
    store.queues = ("mail",)
    me = WorkerId.current("W", 0)
    began = time.monotonic()
    assert store.claim_batch(me, 0.3, 4) == []
    assert time.monotonic() - began >= 0.25
    (job,) = store.list(None, 10, 0)[0]
    assert job["status"] == "pending"  # still there for a worker of its queue


def test_a_worker_wakes_when_a_delayed_job_of_its_queue_is_due(store):
    store.submit_many([NewJob("nap", args="[0]", kwargs="{}", run_after=time.time() + 0.1)])
    me = WorkerId.current("W", 0)
    began = time.monotonic()
    assert store.claim_batch(me, 5, 1) == []  # woken at its time, before the block's end
    assert time.monotonic() - began < 2
    assert len(store.claim_batch(me, 0, 1)) == 1


def test_a_batch_claimed_in_one_statement_keeps_the_one_at_a_time_order():
    """claim_order: the others above priority 0, the plain jobs, then the others at 0 or
    below, oldest first within each, whatever order SQLite returned them in."""
    rows = [(7, -3, "default"), (2, 0, "default"), (9, 5, "default"), (1, 0, "default")]
    rows += [(4, 5, "default"), (3, 0, "mail"), (8, 9, "mail")]
    ranked = sorted(rows, key=lambda r: claim_order(r[1], r[2], r[0]))
    assert [r[0] for r in ranked] == [8, 4, 9, 1, 2, 3, 7]


def test_done_attempts_are_recorded_in_one_batch_per_kind_of_result():
    fib = Claim(1, "fib", 10, None, 1, 0.0)
    noop = Claim(2, "noop", None, None, 2, 0.0, args="[]", kwargs="{}")
    failed = Attempt(Claim(3, "noop", None, None, 1, 0.0, args="[]"), None, "boom", 1.0)
    attempts = [Attempt(fib, 55, None, None, 12.5), Attempt(noop, '"x"', None), failed]
    done, others = done_batches(attempts)
    assert [json.loads(batch) for _, batch in done] == [[[1, 1, 55, 12.5]], [[2, 2, '"x"', None]]]
    assert "output = " in done[0][0] and "result = " in done[1][0]
    assert others == [failed]
    assert done_batches([failed]) == ([], [failed])


def test_a_busy_write_lock_is_polled_quickly_at_first_then_less_often():
    assert busy_delay(0.0) == busy_delay(BUSY_FAST / 2) == BUSY_POLL
    assert BUSY_POLL < busy_delay(BUSY_FAST * 2) < BUSY_POLL_MAX
    assert busy_delay(10.0) == BUSY_POLL_MAX


def test_one_claim_statement_takes_a_queue_s_jobs_in_priority_order(store):
    low = naps(store, 0, priority=-3)
    plain = naps(store, 0, 0)
    high = naps(store, 0, priority=5)
    higher = naps(store, 0, priority=9)
    me = WorkerId.current("W", 0)
    claims = store.claim_batch(me, 0, 4)
    assert [c.job_id for c in claims] == [*higher, *high, *plain]
    assert [c.attempts for c in claims] == [1] * 4
    assert [c.args for c in claims] == ["[0]"] * 4
    assert [c.job_id for c in store.claim_batch(me, 0, 4)] == low


def test_a_batch_of_results_is_fenced_and_settles_the_jobs_waiting_on_it(store):
    parent, other, gone = naps(store, 0, 0, 0)
    (child,) = store.submit_many([NewJob("nap", args="[0]", kwargs="{}", depends_on=(parent,))])
    fib = store.submit_many([NewJob("fib", input=10)])[0]
    me = WorkerId.current("W", 0)
    claims = {c.job_id: c for c in store.claim_batch(me, 0, 4)}
    assert set(claims) == {parent, other, gone, fib}
    store.cancel(gone)  # its result must not land
    ran = [Attempt(claims[i], "null", None) for i in (parent, other, gone)]
    ran.append(Attempt(claims[fib], 55, None))
    store.finish_batch(me, ran, claim_next=0)
    assert [store.get(i)["status"] for i in (parent, other, gone)] == ["done", "done", "cancelled"]
    assert (store.get(fib)["status"], store.get(fib)["output"]) == ("done", 55)
    assert store.get(parent)["result"] == "null"
    assert store.get(child)["status"] == "pending"  # its parent's finish released it
    assert store.counts()["done"] == 3


def test_quick_jobs_of_a_batch_share_one_timer_each_ended_no_sooner_than_its_timeout():
    assert rearm(None, 100.0, 5.0)  # not set
    armed = (100.0, 5.0)  # set at 100 for a job of 5 s: it ends at 105 + TIMER_SLACK
    assert not rearm(armed, 100.0 + TIMER_SLACK / 2, 5.0)  # gets >= 5 s, <= slack more
    assert rearm(armed, 100.0 + TIMER_SLACK * 2, 5.0)  # would be cut short: set again
    assert rearm(armed, 100.0, 1.0)  # a shorter timeout would run long: set again
    assert rearm(armed, 100.0, 9.0)  # a longer one would be cut short


def test_no_timer_is_left_set_once_a_batch_is_recorded(store):
    naps(store, 0, 0, 0)
    batch = Batch(runner(store))
    batch.size = 3
    batch.step(store, 0, stopping=False)  # claims three
    batch.step(store, 0, stopping=False)
    assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # kept for the next job
    batch.step(store, 0, stopping=False)
    batch.step(store, 0, stopping=False)  # the last: nothing follows at once
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    batch.step(store, 0, stopping=False)  # recorded
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
