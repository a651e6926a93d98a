"""Jobs of any registered function, on SQLite and on Redis, run by real worker processes:
JSON arguments and results, delays, priorities, idempotency keys, dependencies, queues,
progress, retention, requeue and burst mode (`procorch job work --burst`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import procorch
from procorch import Jobs
from procorch.jobs.functions import _DECORATED
from tests.conftest import Stack, epoch, jobs_table, wait_for

TASKS = """
import os, time
import procorch
from procorch.jobs import current

@procorch.job(name="echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs, "nested": [1, {"x": None}]}

@procorch.job(max_attempts=1)
def boom(why="no luck"):
    raise RuntimeError(why)

@procorch.job(max_attempts=1)
def flaky(flag):
    if not os.path.exists(flag):
        raise RuntimeError("no flag yet")
    return "ok"

@procorch.job(queue="slow")
def gated(gate):
    current().progress(0.4, {"rows": 400})
    while not os.path.exists(gate):
        time.sleep(0.01)
    return "opened"

@procorch.job()
def stamp(name):
    return {"name": name, "at": time.time()}
"""

FUNCTIONS = """
[jobs.functions]
short = { target = "tasks:stamp", result_ttl = "1s" }
"""


@pytest.fixture(autouse=True)
def fresh_job_modules():
    """Each test's own tasks.py: this process imports it (to know its names), so the
    module, its directory on sys.path and its registrations go when the test ends."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    sys.modules.pop("tasks", None)
    _DECORATED.clear()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request) -> str:
    return "sqlite" if request.param == "sqlite" else request.getfixturevalue("redis_url")


@pytest.fixture
def tasks(stack: Stack, backend: str):
    """A config with the tasks module (decorated functions) on either store; no daemon."""
    (stack.root / "tasks.py").write_text(TASKS)
    stack.write(jobs_table(backend=backend, modules=["tasks"]) + FUNCTIONS)
    with Jobs.open(stack.config) as jobs:
        yield jobs


def burst(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return stack.cli("job", "work", "--burst", *args, timeout=60)


def test_a_dict_result_round_trips(stack, tasks):
    job_id = tasks.submit("echo", args=[1, "two", [3]], kwargs={"k": {"v": True}})
    assert burst(stack).returncode == 0
    assert tasks.wait(job_id, timeout=5) == {
        "args": [1, "two", [3]],
        "kwargs": {"k": {"v": True}},
        "nested": [1, {"x": None}],
    }
    job = tasks.get(job_id)
    assert (job["function"], job["args"], job["kwargs"]) == (
        "echo",
        [1, "two", [3]],
        {"k": {"v": True}},
    )
    assert (job["input"], job["output"]) == (None, None)
    # the decorated function's own submit, and the built-in next to it
    fib = tasks.submit("fib", args=[10])
    assert burst(stack).returncode == 0
    assert tasks.get(fib)["result"] == tasks.get(fib)["output"] == 55


def test_map_enqueues_many_calls_at_once_and_wait_raises_a_failure(stack, tasks):
    ids = tasks.map("echo", [[1], ([2], {"k": "v"}), ()], priority=3)
    assert ids == sorted(ids) and len(set(ids)) == 3
    failed = tasks.submit("boom", kwargs={"why": "disk on fire"})
    assert burst(stack).returncode == 1  # a job failed
    assert [tasks.wait(i, timeout=5)["args"] for i in ids] == [[1], [2], []]
    assert tasks.get(ids[1])["kwargs"] == {"k": "v"}
    assert {tasks.get(i)["priority"] for i in ids} == {3}
    with pytest.raises(procorch.JobFailed, match="disk on fire"):
        tasks.wait(failed, timeout=5)
    assert tasks.wait_job(failed, timeout=5)["status"] == "failed"
    # all or none: one bad call enqueues nothing
    before = tasks.list()["total"]
    with pytest.raises(procorch.InvalidJob):
        tasks.map("echo", [[1], "not a list"])
    assert tasks.list()["total"] == before


def test_bad_submissions_are_one_line_and_change_nothing(tasks):
    with pytest.raises(
        procorch.InvalidJob, match=r"unknown job function 'nope' \(known: fib, short, echo"
    ):
        tasks.submit("nope", args=[])
    with pytest.raises(procorch.InvalidJob, match="args must be a list"):
        tasks.submit("echo", args="x")
    with pytest.raises(procorch.InvalidJob, match="args must be JSON"):
        tasks.submit("echo", args=[object()])
    with pytest.raises(procorch.InvalidJob, match="more than 1048576"):
        tasks.submit("echo", args=["x" * (1024 * 1024)])
    with pytest.raises(procorch.JobNotFound, match="depends_on: no job with id 99"):
        tasks.submit("echo", depends_on=[99])
    assert tasks.list()["total"] == 0


def test_a_delayed_job_starts_no_earlier_than_its_time(stack, tasks):
    job_id = tasks.submit("stamp", args=["late"], delay=1.0)
    soon = tasks.submit("stamp", args=["soon"])
    assert burst(stack).returncode == 0
    late, first = tasks.get(job_id), tasks.get(soon)
    assert epoch(late["started_time"]) >= epoch(late["init_time"]) + 1.0
    assert late["result"]["at"] > first["result"]["at"]


def test_with_workers_stopped_the_higher_priority_is_claimed_first(stack, tasks):
    low = [tasks.submit("stamp", args=[f"low{i}"]) for i in range(3)]
    high = tasks.submit("stamp", args=["high"], priority=5)
    assert burst(stack).returncode == 0  # one worker: one job at a time
    order = sorted([*low, high], key=lambda i: tasks.get(i)["result"]["at"])
    assert order == [high, *low]  # then the oldest first among equals


def test_a_duplicate_key_returns_the_first_id(tasks):
    first = tasks.submit("echo", args=[1], key="k-1", delay=5)
    assert tasks.submit("echo", args=[1], key="k-1", delay=6) == first  # when: not the job
    with pytest.raises(procorch.JobConflict):
        tasks.submit("echo", args=[2], key="k-1")
    assert tasks.list()["total"] == 1


def test_a_chain_runs_in_order_and_a_failed_parent_cancels_its_children(stack, tasks):
    a = tasks.submit("stamp", args=["a"])
    b = tasks.submit("stamp", args=["b"], depends_on=[a], priority=9)
    c = tasks.submit("stamp", args=["c"], depends_on=[a, b], priority=9)
    broken = tasks.submit("boom")
    child = tasks.submit("echo", depends_on=[broken])
    grandchild = tasks.submit("echo", depends_on=[child])
    assert tasks.get(b)["status"] == tasks.get(c)["status"] == "waiting"
    assert burst(stack).returncode == 1  # a job failed
    at = [tasks.get(i)["result"]["at"] for i in (a, b, c)]
    assert at == sorted(at)
    assert tasks.get(c)["depends_on"] == [a, b]
    for job_id, parent in ((child, broken), (grandchild, child)):
        job = tasks.get(job_id)
        assert job["status"] == "cancelled"
        assert (
            job["error"]
            == f"job {parent} it depends on was {'failed' if parent == broken else 'cancelled'}"
        )
    # a job submitted after its parent failed is cancelled at once
    late = tasks.get(tasks.submit("echo", depends_on=[broken]))
    assert (late["status"], late["error"]) == (
        "cancelled",
        f"job {broken} it depends on was failed",
    )


def test_requeue_of_a_failed_job_runs_it_again(stack, tasks):
    flag = stack.root / "flag"
    job_id = tasks.submit("flaky", args=[str(flag)])
    assert burst(stack).returncode == 1
    failed = tasks.get(job_id)
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert [e["error"] for e in failed["errors"]] == ["RuntimeError: no flag yet"]
    flag.touch()
    assert stack.cli("job", "requeue", "--failed").stdout == f"requeued 1 job: {job_id}\n"
    assert burst(stack).returncode == 0
    job = tasks.get(job_id)
    assert (job["status"], job["result"], job["attempts"]) == ("done", "ok", 1)
    assert len(job["errors"]) == 1  # the dead letter's history is kept
    with pytest.raises(procorch.JobConflict, match="is done, not failed"):
        tasks.requeue(job_id)


def test_burst_mode_exits_0_with_nothing_to_do_and_2_on_bad_usage(stack, tasks):
    assert burst(stack).returncode == 0
    bad = burst(stack, "--queue", "no way")
    assert (bad.returncode, bad.stderr.count("\n")) == (2, 1)


def test_purge_by_status_and_age(stack, tasks):
    ids = [tasks.submit("echo", args=[i]) for i in range(3)]
    assert burst(stack).returncode == 0
    kept = stack.cli("job", "purge", "--status", "done", "--older-than", "1d")
    assert kept.stdout == "purged 0 jobs\n"
    gone = stack.cli("job", "purge", "--status", "done", "--older-than", "0s")
    assert gone.stdout == "purged 3 jobs\n"
    for job_id in ids:
        with pytest.raises(procorch.JobNotFound):
            tasks.get(job_id)
    assert tasks.stats()["counts"]["done"] == 0


@pytest.fixture
def daemon(stack, backend):
    """The tasks under a daemon: JobWorker takes every queue but `slow`, SlowWorker `slow`."""
    (stack.root / "tasks.py").write_text(TASKS)
    workers = textwrap.dedent(
        """
        [services.JobWorker]
        module = "procorch.jobs.worker:JobWorker"
        queues = ["default"]

        [services.SlowWorker]
        module = "procorch.jobs.worker:JobWorker"
        queues = ["slow"]
        """
    )
    stack.write(jobs_table(backend=backend, modules=["tasks"]) + FUNCTIONS + workers)
    stack.up()
    with Jobs.open(stack.config) as jobs:
        yield jobs


def test_progress_is_visible_while_a_job_runs_and_queues_isolate_slow_work(stack, daemon):
    gate = stack.root / "gate"
    slow = daemon.submit("gated", args=[str(gate)])
    job = wait_for(lambda: (j := daemon.get(slow))["progress"] is not None and j, timeout=10)
    assert (job["status"], job["progress"], job["meta"], job["queue"]) == (
        "running",
        0.4,
        {"rows": 400},
        "slow",
    )
    # the slow queue's one worker is held: the default queue's jobs run all the same
    fast = [daemon.submit("echo", args=[i]) for i in range(5)]
    assert [daemon.wait_job(i, timeout=10)["status"] for i in fast] == ["done"] * 5
    assert daemon.get(slow)["status"] == "running"
    shown = stack.cli("job", "status", str(slow)).stdout
    assert "progress       0.4" in shown and '{"rows": 400}' in shown
    gate.touch()
    assert daemon.wait(slow, timeout=10) == "opened"


def test_a_job_past_its_ttl_is_gone(stack, daemon):
    job_id = daemon.submit("short", args=["brief"])
    kept = daemon.submit("stamp", args=["kept"])  # the default result_ttl: 7 days
    assert daemon.wait_job(job_id, timeout=10)["status"] == "done"
    daemon.wait_job(kept, timeout=10)

    # the workers delete it a second after it finished: from the store, not only from view
    wait_for(lambda: daemon.list(function="short")["total"] == 0, timeout=5)
    with pytest.raises(procorch.JobNotFound):
        daemon.get(job_id)
    assert daemon.get(kept)["status"] == "done"
    assert daemon.list(function="stamp")["total"] == 1


def test_a_job_past_its_ttl_is_gone_even_with_no_worker_left_to_delete_it(stack, tasks):
    job_id = tasks.submit("short", args=["brief"])
    assert burst(stack).returncode == 0  # the workers finish it, and are gone
    assert tasks.get(job_id)["status"] == "done"

    def gone() -> bool:
        try:
            tasks.get(job_id)
        except procorch.JobNotFound:
            return True
        return False

    wait_for(gone, timeout=5)  # its result_ttl is 1 s
    assert stack.cli("job", "status", str(job_id)).returncode == 1


def test_claims_go_by_priority_then_age_across_plain_and_other_jobs(tasks):
    """The store's claim order, whatever index holds a job: plain F(n) jobs (default queue,
    priority 0) and the others (a priority, another queue) merge into one order."""
    from procorch.jobs.store import WorkerId

    low = tasks.submit(1, priority=-1)
    plain = tasks.submit(2)
    high = tasks.submit("echo", args=["high"], priority=5)
    plain_later = tasks.submit(3)
    elsewhere = tasks.submit("echo", args=["mail"], queue="mail", priority=9)
    store, me = tasks._store, WorkerId.current("test", 0)
    order = [store.claim(me, 0).job_id for _ in range(5)]
    assert order == [elsewhere, high, plain, plain_later, low]  # a worker of all queues
    assert store.claim(me, 0) is None
