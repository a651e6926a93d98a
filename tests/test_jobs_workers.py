"""Jobs run by real JobWorker processes under a real daemon, on SQLite and on Redis."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime

import psutil
import pytest

import procorch
from procorch import Jobs
from procorch.jobs.fib import fib
from tests.conftest import PY, jobs_table, wait_for


@pytest.fixture(params=["sqlite", "redis"])
def backend(request) -> str:
    return "sqlite" if request.param == "sqlite" else request.getfixturevalue("redis_url")


@pytest.fixture
def run(stack, backend, request):
    """Write a config with these [jobs] settings, bring the stack up, return its Jobs."""
    opened = []

    def start(settings: str = "", **jobs) -> Jobs:
        stack.write(jobs_table(backend=backend, **jobs), settings=settings)
        stack.up()
        opened.append(Jobs.open(stack.config))
        return opened[-1]

    yield start
    for jobs in opened:
        jobs.close()


def when(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def worker_pid(job: dict) -> int:
    return int(job["worker"].rsplit(":", 1)[1])


def running(jobs: Jobs, job_id: int) -> dict | None:
    job = jobs.get(job_id)
    return job if job["status"] == "running" else None


def test_a_job_runs_once_with_every_field(stack, run):
    jobs = run()
    first, second = jobs.submit(100), jobs.submit(100, mod=1000)
    job = jobs.wait_job(first, timeout=10)
    assert jobs.wait_job(second, timeout=10)["output"] == 75
    assert job["output"] == 687995182
    assert (job["status"], job["attempts"], job["error"], job["input"]) == ("done", 1, None, 100)
    assert when(job["init_time"]) <= when(job["started_time"]) <= when(job["finished_time"])
    assert re.fullmatch(r".+:JobWorker\.[01]:\d+", job["worker"])
    assert worker_pid(job) in {r["pid"] for r in stack.replicas("JobWorker")}


def test_failures_are_retried_with_backoff_then_failed(run):
    jobs = run(failure_rate=1.0, max_attempts=3)
    job = jobs.wait_job(jobs.submit(7), timeout=10)
    assert (job["status"], job["attempts"], job["output"]) == ("failed", 3, None)
    assert "simulated failure" in job["error"]
    # backoff 0.1 s then 0.2 s between the three attempts
    assert when(job["finished_time"]) - when(job["init_time"]) >= 0.3


def test_a_job_past_its_timeout_is_killed_with_its_worker_and_retried(stack, run):
    jobs = run(delay=5, timeout=0.5, max_attempts=2)
    job = jobs.wait_job(jobs.submit(7), timeout=20)
    assert (job["status"], job["attempts"]) == ("failed", 2)
    assert job["error"].startswith("timed out after 0.5s")
    exits = [e for e in stack.events() if e["event"] == "exited" and e["service"] == "JobWorker"]
    assert [e["detail"] for e in exits] == ["killed by SIGALRM"] * 2


def test_cancel_a_running_job(run):
    jobs = run(settings="heartbeat_timeout = 2.0\n", delay=0.8)
    job_id = jobs.submit(7)
    wait_for(lambda: running(jobs, job_id))
    cancelled = jobs.cancel(job_id)
    assert (cancelled["status"], cancelled["output"]) == ("cancelled", None)
    after = jobs.wait_job(jobs.submit(8), timeout=10)  # the workers go on
    assert after["status"] == "done"
    assert jobs.get(job_id) == cancelled  # its result, if any, was dropped


def test_kill_9_of_a_worker_mid_job_reruns_it_within_a_second(run):
    jobs = run(delay=1.0)
    job_id = jobs.submit(100)
    first = wait_for(lambda: running(jobs, job_id))
    os.kill(worker_pid(first), signal.SIGKILL)
    killed = time.time()
    job = jobs.wait_job(job_id, timeout=10)
    assert (job["status"], job["output"], job["attempts"]) == ("done", 687995182, 2)
    assert worker_pid(job) != worker_pid(first)
    assert when(job["started_time"]) - killed < 1.0


def test_a_job_that_kills_its_worker_fails_after_max_attempts(stack, run):
    (stack.root / "poison.py").write_text(
        "import os, signal\n\ndef die(n, mod):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    jobs = run(max_attempts=2, functions={"die": "poison:die"})
    job = jobs.wait_job(jobs.submit(1, function="die"), timeout=15)
    assert (job["status"], job["attempts"], job["output"]) == ("failed", 2, None)
    assert re.fullmatch(r"worker .+:JobWorker\.[01]:\d+ died.*", job["error"])
    assert jobs.wait_job(jobs.submit(10), timeout=10)["output"] == 55  # the pool is fine


def test_a_long_job_keeps_its_lease_and_runs_once(run):
    # longer than a Redis lease (2 s): renewed while it runs, so no idle worker takes it
    jobs = run(delay=2.6)
    job = jobs.wait_job(jobs.submit(20), timeout=15)
    assert (job["status"], job["output"], job["attempts"]) == ("done", 6765, 1)


def test_a_hung_workers_lapsed_lease_is_retried(run):
    # the supervisor would kill a silent worker after 30 s; the lease lapses long before
    jobs = run(settings="heartbeat_timeout = 30.0\n", delay=0.3, timeout=0.5)
    job_id = jobs.submit(100)
    first = wait_for(lambda: running(jobs, job_id))
    hung = worker_pid(first)
    os.kill(hung, signal.SIGSTOP)
    try:
        job = jobs.wait_job(job_id, timeout=15)
    finally:
        os.kill(hung, signal.SIGCONT)  # its timer fired meanwhile: SIGALRM ends it now
    assert (job["status"], job["output"], job["attempts"]) == ("done", 687995182, 2)
    assert worker_pid(job) != hung


def test_500_jobs_submitted_concurrently_each_run_exactly_once(stack, run):
    jobs = run()
    script = (
        "import json, sys; from procorch import Jobs; j = Jobs.open(sys.argv[1]);"
        "print(json.dumps([j.submit(n) for n in range(int(sys.argv[2]), int(sys.argv[2]) + 100)]))"
    )
    procs = [
        subprocess.Popen(
            [PY, "-c", script, str(stack.config), str(k * 1000)], stdout=subprocess.PIPE, text=True
        )
        for k in range(5)
    ]
    ids = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        submitted = json.loads(out)
        ids += submitted
        assert submitted == sorted(submitted)  # one submitter's ids grow
    assert sorted(ids) == list(range(1, 501))
    for job_id in ids:
        jobs.wait_job(job_id, timeout=30)
    page = jobs.list(limit=1000)
    assert page["total"] == 500
    for job in page["jobs"]:
        assert (job["status"], job["attempts"]) == ("done", 1)
        assert job["output"] == fib(job["input"], 1_000_000_007)
    # every attempt is counted by the replica that made it: 500 in all, none twice
    assert sum(r["requests"] for r in stack.replicas("JobWorker")) == 500
    stats = jobs.stats()
    assert stats["counts"]["done"] == 500
    assert stats["throughput"]["last_60s"] == pytest.approx(500 / 60, abs=0.01)


def test_kill_9_of_the_daemon_mid_load_then_up_loses_nothing(stack, run):
    jobs = run(delay=0.01)
    ids = jobs.submit_many(list(range(300)))
    wait_for(lambda: jobs.stats()["counts"]["done"] >= 30)
    os.kill(stack.daemon_pid(), signal.SIGKILL)
    # its workers get SIGTERM (PDEATHSIG), finish the job in hand and exit
    wait_for(lambda: not stack.leftovers())
    assert jobs.stats()["counts"]["done"] < 300
    later = jobs.submit(5)  # accepted with no daemon at all: it waits, pending
    stack.up()
    for job_id in [*ids, later]:
        assert jobs.wait_job(job_id, timeout=30)["status"] == "done"
    assert jobs.stats()["counts"] == {
        "waiting": 0,
        "pending": 0,
        "running": 0,
        "done": 301,
        "failed": 0,
        "cancelled": 0,
    }


def test_down_and_up_keeps_every_job(stack, run):
    jobs = run()
    done = jobs.wait_job(jobs.submit(10), timeout=10)
    assert stack.cli("down").returncode == 0
    waiting = jobs.submit(11)
    assert jobs.get(waiting)["status"] == "pending"
    stack.up()
    assert jobs.wait_job(waiting, timeout=10)["output"] == 89
    assert jobs.get(done["job_id"]) == done


def test_no_stale_worker_keeps_running_after_down(stack, run):
    run()
    pids = [r["pid"] for r in stack.replicas("JobWorker")]
    assert stack.cli("down").returncode == 0
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_job_functions_come_only_from_the_allow_list(stack):
    (stack.root / "myjobs.py").write_text(
        "def square(n, mod):\n    return n * n % mod\n\n"
        "def broken(n, mod):\n    raise RuntimeError('no luck')\n"
    )
    functions = '[jobs.functions]\nsquare = "myjobs:square"\nbroken = "myjobs:broken"\n'
    stack.write(jobs_table(max_attempts=1) + functions)
    stack.up()
    with Jobs.open(stack.config) as jobs:
        square = jobs.wait_job(jobs.submit(12, 100, function="square"), timeout=10)
        assert (square["status"], square["function"], square["output"]) == ("done", "square", 44)
        broken = jobs.wait_job(jobs.submit(1, function="broken"), timeout=10)
        assert (broken["status"], broken["error"]) == ("failed", "RuntimeError: no luck")
        with pytest.raises(procorch.InvalidJob, match="unknown job function 'myjobs:square'"):
            jobs.submit(1, function="myjobs:square")  # a job names a function, never code


def test_the_duration_histogram_counts_each_finished_job_once(stack, run):
    delay = 0.06  # inside the (0.05, 0.1] bucket, whatever a run's overhead, up to 40 ms
    gate = stack.root / "gate-open"
    (stack.root / "histjobs.py").write_text(
        "import os, time\n\n"
        "def gated(n, mod):  # holds its worker until the test opens the gate\n"
        f"    while not os.path.exists({str(gate)!r}):\n"
        "        time.sleep(0.01)\n"
        "    return n\n\n"
        "def flaky(n, mod):  # the first attempt fails, the retry succeeds\n"
        f"    marker = os.path.join({str(stack.root)!r}, f'tried-{{n}}')\n"
        "    if not os.path.exists(marker):\n"
        "        open(marker, 'w').close()\n"
        "        raise RuntimeError('first attempt')\n"
        "    return n\n\n"
        "def broken(n, mod):\n"
        "    raise RuntimeError('never works')\n"
    )
    functions = {name: f"histjobs:{name}" for name in ("gated", "flaky", "broken")}
    jobs = run(delay=delay, max_attempts=2, functions=functions)

    # cancelled jobs are not observed: two cancelled while running, one while pending
    held = jobs.submit_many([1, 2], function="gated")
    wait_for(lambda: all(running(jobs, job_id) for job_id in held))
    waiting = jobs.submit(3)  # both workers are held: it stays pending
    for job_id in [waiting, *held]:
        assert jobs.cancel(job_id)["status"] == "cancelled"
    gate.touch()  # the held attempts end now; the store drops their results

    ids = jobs.submit_many(list(range(10, 16)))
    flaky, broken = jobs.submit(20, function="flaky"), jobs.submit(21, function="broken")
    finished = {job_id: jobs.wait_job(job_id, timeout=10) for job_id in [*ids, flaky, broken]}
    assert [finished[i]["status"] for i in ids] == ["done"] * 6
    # retried once each: one observation each, of the last attempt alone
    assert (finished[flaky]["status"], finished[flaky]["attempts"]) == ("done", 2)
    assert (finished[broken]["status"], finished[broken]["attempts"]) == ("failed", 2)

    durations = jobs._store.durations()
    stats = jobs.stats()
    counts = stats["counts"]
    assert (counts["done"], counts["failed"], counts["cancelled"]) == (7, 1, 3)
    assert durations.count == counts["done"] + counts["failed"] == 8
    cumulative = [count for _bound, count in durations.buckets]
    assert cumulative == sorted(cumulative)
    assert durations.buckets[-1] == (math.inf, 8)
    assert dict(durations.buckets)[0.05] == 0  # none ran shorter than the delay
    assert dict(durations.buckets)[0.1] == 8
    assert 8 * delay - 0.001 <= durations.sum < 8 * (delay + 0.04)
    assert stats["durations"] == {
        "buckets": [[bound, count] for bound, count in durations.buckets[:-1]] + [["+Inf", 8]],
        "count": 8,
        "sum": durations.sum,
    }
    line = stack.cli("job", "stats").stdout.splitlines()[-1]
    assert re.fullmatch(r"duration: 8 finished jobs ran 0\.0[6-9]\d* s on average", line)


def test_burst_mode_exits_1_when_a_worker_exits_with_an_error(stack):
    """A worker process that ends with an error status is neither replaced (only a kill,
    a job's timeout, is) nor silent: the queue is not drained, so the command is not 0."""
    (stack.root / "quitter.py").write_text("import os\n\ndef quit(n, mod):\n    os._exit(3)\n")
    stack.write(jobs_table(functions={"quit": "quitter:quit"}))
    with Jobs.open(stack.config) as jobs:
        job_id = jobs.submit(1, function="quit")
        done = stack.cli("job", "work", "--burst", timeout=30)
        assert done.returncode == 1, done.stderr
        assert (
            done.stderr
            == "worker 0 exited with status 3; the jobs it held wait for another worker\n"
        )
        assert jobs.get(job_id)["status"] == "running"  # its worker is gone with it


def test_a_burst_worker_is_replaced_only_when_killed_and_not_too_often():
    from procorch.jobs.burst import INTERRUPTED, MAX_REPLACEMENTS, Ending, ending

    assert ending(0, 0) is ending(INTERRUPTED, 0) is Ending.DONE
    assert ending(-signal.SIGALRM, 0) is ending(-9, MAX_REPLACEMENTS - 1) is Ending.REPLACE
    assert ending(-9, MAX_REPLACEMENTS) is ending(1, 0) is ending(3, 0) is Ending.LOST


def test_burst_mode_with_the_store_unreachable_says_so_in_lines_and_exits_1(stack):
    """The command checks the store before forking (one line); a worker that finds it
    gone says so in a line too, and the command exits 1: here the workers are started
    without that check, as when the store goes away after it."""
    from tests.conftest import free_port

    stack.write(jobs_table(backend=f"redis://:s3cret@127.0.0.1:{free_port()}/0"))
    command = stack.cli("job", "work", "--burst", timeout=30)
    assert command.returncode == 1
    assert command.stderr.startswith("procorch: cannot reach redis at redis://:***@127.0.0.1:")
    assert len(command.stderr.splitlines()) == 1
    workers = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from procorch.config import load_config;"
            " from procorch.jobs.burst import work;"
            " sys.exit(work(load_config(sys.argv[1]), None, 1))",
            str(stack.config),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert workers.returncode == 1
    first, second = workers.stderr.splitlines()
    assert first.startswith("worker 0: cannot reach redis at redis://:***@127.0.0.1:")
    assert second.startswith("worker 0 exited with status 1;")
    assert "s3cret" not in command.stderr + workers.stderr


def test_the_scheduler_finds_modules_beside_its_config_from_another_cwd(tmp_path):
    """As the daemon runs it, whatever its cwd (here the test's): the tick is a job of
    the decorated function, not an import error."""
    import sys

    from procorch.config import load_config
    from procorch.jobs.functions import _DECORATED
    from procorch.jobs.scheduler import Scheduler

    here = tmp_path / "conf"
    here.mkdir()
    (here / "ticktasks.py").write_text(
        "import procorch\n\n@procorch.job(name='tick')\ndef tick():\n    return 1\n"
    )
    (here / "procorch.toml").write_text(
        '[jobs]\nmodules = ["ticktasks"]\n[jobs.schedules]\nt = { function = "tick", every = 1 }\n'
    )
    assert os.getcwd() != str(here)
    path = list(sys.path)
    config = load_config(here / "procorch.toml")
    config.settings.run_dir.mkdir()  # the daemon's, made before it starts the scheduler
    scheduler = Scheduler.from_config(config)
    reports: list[tuple[str, str]] = []
    scheduler.start()
    try:
        wait_for(lambda: reports.extend(scheduler.reports()) or reports, timeout=10)
        assert reports[0][0] == "schedule-fired", reports
        with Jobs.from_config(config) as jobs:
            (job,) = jobs.list()["jobs"]
        assert (job["function"], job["status"]) == ("tick", "pending")
    finally:
        scheduler.stop()
        sys.path[:] = path
        sys.modules.pop("ticktasks", None)
        _DECORATED.pop("tick", None)
