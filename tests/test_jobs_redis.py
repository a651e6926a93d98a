"""Scale-out: two daemons (two run directories) sharing one queue in a real redis-server."""

from __future__ import annotations

import os
import signal
import time

import psutil

from procorch import Jobs
from procorch.config import JobsSettings
from procorch.jobs.fib import fib
from procorch.jobs.redis_store import Idle, RedisStore
from procorch.jobs.store import NewJob, WorkerId
from tests.conftest import Stack, jobs_table, wait_for


def test_two_daemons_share_the_queue_and_finish_each_others_jobs(tmp_path, redis_url):
    a, b = Stack(tmp_path / "a"), Stack(tmp_path / "b")
    try:
        for s in (a, b):
            s.root.mkdir()
            s.write(jobs_table(backend=redis_url, delay=0.6))
            s.up()
        pids = {s: {r["pid"] for r in s.replicas("JobWorker")} for s in (a, b)}
        with Jobs.open(a.config) as jobs:
            ids = jobs.submit_many(list(range(100, 112)))

            def on(stack: Stack) -> list[dict]:
                running = jobs.list(status="running")["jobs"]
                return [j for j in running if int(j["worker"].rsplit(":", 1)[1]) in pids[stack]]

            # every worker of both daemons takes a job: the queue is shared
            wait_for(lambda: len(on(a)) == 2 and len(on(b)) == 2, timeout=10)
            # freeze daemon a (no restarts) and its workers, note their jobs, kill them all
            os.kill(a.daemon_pid(), signal.SIGSTOP)
            for pid in pids[a]:
                os.kill(pid, signal.SIGSTOP)
            orphans = [j["job_id"] for j in on(a)]
            assert len(orphans) == 2
            for pid in [*pids[a], a.daemon_pid()]:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not any(psutil.pid_exists(p) for p in pids[a]))

            finished = [jobs.wait_job(job_id, timeout=30) for job_id in ids]
        for job in finished:
            assert (job["status"], job["output"]) == ("done", fib(job["input"], 1_000_000_007))
            if job["job_id"] in orphans:  # taken back from the dead consumer, run by b
                assert job["attempts"] == 2
                assert int(job["worker"].rsplit(":", 1)[1]) in pids[b]
    finally:
        for s in (a, b):
            s.cleanup()


def test_workers_carry_on_after_the_redis_data_is_flushed(stack, redis_url, redis_server):
    stack.write(jobs_table(backend=redis_url))
    stack.up()
    with Jobs.open(stack.config) as jobs:
        assert jobs.wait_job(jobs.submit(10), timeout=10)["output"] == 55
        redis_server.client.flushall()  # the stream and its consumer group are gone
        job = jobs.wait_job(jobs.submit(11), timeout=10)
    assert (job["job_id"], job["output"]) == (1, 89)  # a new queue, from id 1
    assert all(r["restarts"] == 0 for r in stack.replicas("JobWorker"))


def test_a_look_that_found_nothing_says_what_to_block_on():
    assert Idle.of([0, b"", b"mail", b"default"]) == Idle(None, ["default", "mail"])
    assert Idle.of([0, b"1700000000.25", b"default"]) == Idle(1700000000.25, ["default"])


def test_an_idle_worker_blocks_at_once_after_a_finish_and_wakes_for_a_submit(tmp_path, redis_url):
    """The finish that found nothing more said what to block on: the next claim blocks
    without looking again, and a submit (a wake-up token) still reaches it at once,
    as does a delayed job's due time."""
    settings = JobsSettings(backend=redis_url, functions={"nap": {"target": "time:sleep"}})
    worker, client = RedisStore(settings, tmp_path), RedisStore(settings, tmp_path)
    me = WorkerId.current("W", 0)
    try:
        (first,) = client.submit_many([NewJob("nap", args="[0]", kwargs="{}")])
        claim = worker.claim(me, 0)
        assert claim is not None and claim.job_id == first
        assert worker.finish(me, claim, "null", None, claim_next=True) is None
        assert worker._idle is not None  # nothing left: what to block on, from that look
        (second,) = client.submit_many([NewJob("nap", args="[0]", kwargs="{}")])
        began = time.monotonic()
        claim = worker.claim(me, 5.0)
        assert claim is not None and claim.job_id == second
        assert time.monotonic() - began < 1.0
        assert worker.finish(me, claim, "null", None, claim_next=True) is None
        later = NewJob("nap", args="[0]", kwargs="{}", run_after=time.time() + 0.2)
        (third,) = client.submit_many([later])
        claim = worker.claim(me, 0.2)  # at most BLOCK_MAX anyway: until it is due
        while claim is None and time.monotonic() - began < 5:
            claim = worker.claim(me, 0.2)
        assert claim is not None and claim.job_id == third
    finally:
        worker.close()
        client.close()
