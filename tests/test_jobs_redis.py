"""Scale-out: two daemons (two run directories) sharing one queue in a real redis-server."""

from __future__ import annotations

import os
import signal

import psutil

from procorch import Jobs
from procorch.jobs.fib import fib
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
