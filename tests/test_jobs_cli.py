"""`procorch job ...` and `procorch submit-job`: outputs, exit codes and one-line errors."""

from __future__ import annotations

import json
import os

import pytest

from procorch.jobs.job import FIELDS
from procorch.jobs.store import DURATION_BUCKETS
from tests.conftest import jobs_table
from tests.test_cli import assert_one_line_error


@pytest.fixture
def jobs_stack(stack):
    stack.write(jobs_table(max_n=1000))
    return stack


def test_submit_prints_taken_per_job_without_a_daemon(jobs_stack):
    result = jobs_stack.cli("job", "submit", "100", "7", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        '{"status": "taken", "job_id": 1}',
        '{"status": "taken", "job_id": 2}',
    ]
    alias = jobs_stack.cli("submit-job", "5")
    assert (alias.returncode, alias.stdout) == (0, "job 3 taken\n")
    listed = json.loads(jobs_stack.cli("job", "list", "--json").stdout)
    assert (listed["count"], listed["total"]) == (3, 3)
    assert [j["status"] for j in listed["jobs"]] == ["pending"] * 3  # no workers: they wait


def test_status_list_cancel_and_stats(jobs_stack):
    jobs_stack.cli("job", "submit", "1", "2", "3", "--mod", "10")
    status = jobs_stack.cli("job", "status", "2", "--json")
    assert status.returncode == 0
    job = json.loads(status.stdout)
    assert tuple(job) == FIELDS
    assert (job["job_id"], job["input"], job["mod"], job["status"]) == (2, 2, 10, "pending")
    text = jobs_stack.cli("job", "status", "2").stdout
    assert "status" in text and "pending" in text and "init_time" in text

    cancel = jobs_stack.cli("job", "cancel", "2")
    assert (cancel.returncode, cancel.stdout) == (0, "job 2 cancelled: F(2) mod 10\n")
    again = jobs_stack.cli("job", "cancel", "2")
    assert_one_line_error(again, 1, "job 2 is already cancelled")

    page = json.loads(jobs_stack.cli("job", "list", "--status", "pending", "--json").stdout)
    assert [j["job_id"] for j in page["jobs"]] == [1, 3]
    page = json.loads(
        jobs_stack.cli("job", "list", "--limit", "1", "--offset", "1", "--json").stdout
    )
    assert ([j["job_id"] for j in page["jobs"]], page["count"], page["total"]) == ([2], 1, 3)
    table = jobs_stack.cli("job", "list").stdout.splitlines()
    assert table[0].split() == [
        "job_id", "status", "function", "args", "result", "attempts", "finished_time"
    ]  # fmt: skip
    assert table[-1] == "1-3 of 3"

    stats = json.loads(jobs_stack.cli("job", "stats", "--json").stdout)
    assert stats["counts"] == {
        "waiting": 0,
        "pending": 2,
        "running": 0,
        "done": 0,
        "failed": 0,
        "cancelled": 1,
    }
    # the histogram as JSON can write it (no Infinity), empty: a cancelled job is no run
    buckets = [[bound, 0] for bound in DURATION_BUCKETS] + [["+Inf", 0]]
    assert stats["durations"] == {"buckets": buckets, "count": 0, "sum": 0.0}
    text = jobs_stack.cli("job", "stats").stdout
    assert "pending    2" in text
    assert "duration" not in text  # its line waits for a finished job


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["job", "submit", "abc"], 2, "n must be an integer, got 'abc'"),
        (["job", "submit", "5", "1001"], 2, "n must be from 0 to 1000, got 1001"),
        (["submit-job", "--", "-3"], 2, "n must be from 0 to 1000, got -3"),
        (["job", "submit", "5", "--mod", "1"], 2, "mod must be from 2 to"),
        (["job", "submit", "5", "--function", "os:system"], 2, "unknown job function"),
        (["job", "status", "42"], 1, "no job with id 42"),
        (["job", "status", "x"], 2, "job id must be an integer, got 'x'"),
        (["job", "wait", "42"], 1, "no job with id 42"),
        (["job", "cancel", "42"], 1, "no job with id 42"),
        (["job", "list", "--status", "bogus"], 2, "unknown status 'bogus'"),
        (["job", "list", "--limit", "many"], 2, "limit must be an integer"),
    ],
)
def test_errors_are_one_line(jobs_stack, args, code, needle):
    assert_one_line_error(jobs_stack.cli(*args), code, needle)
    assert jobs_stack.cli("job", "list", "--json").returncode == 0
    assert json.loads(jobs_stack.cli("job", "list", "--json").stdout)["total"] == 0


def test_bad_jobs_config_and_unreachable_redis(stack):
    stack.write(jobs_table(failure_rate=2))
    assert_one_line_error(stack.cli("job", "stats"), 2, "jobs.failure_rate")
    stack.write(jobs_table(backend="redis://127.0.0.1:1/0"))
    assert_one_line_error(stack.cli("job", "submit", "5"), 1, "cannot reach redis at")
    # the foreground workers: one line before forking, not a traceback per worker
    work = stack.cli("job", "work", "--burst", "--workers", "2")
    assert_one_line_error(work, 1, "cannot reach redis at redis://127.0.0.1:1/0")
    stack.write(jobs_table())
    stack.run_dir.write_text("a file where the run directory should be")
    assert_one_line_error(stack.cli("job", "list"), 1, "cannot open the job queue")


def test_submit_wait_and_job_wait_with_workers(jobs_stack):
    jobs_stack.up()
    result = jobs_stack.cli("job", "submit", "100", "10", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(j["status"], j["output"]) for j in outputs] == [("done", 687995182), ("done", 55)]
    waited = jobs_stack.cli("job", "wait", "1")
    assert (waited.returncode, waited.stdout) == (
        0,
        "job 1 done: F(100) mod 1000000007 = 687995182\n",
    )
    text = jobs_stack.cli("job", "submit", "12", "--wait")
    assert text.stdout == "job 3 done: F(12) mod 1000000007 = 144\n"


def test_waiting_for_a_failed_job_exits_1(stack):
    stack.write(jobs_table(failure_rate=1.0, max_attempts=1))
    stack.up()
    result = stack.cli("job", "submit", "5", "--wait")
    assert result.returncode == 1
    assert result.stdout.startswith("job 1 failed: F(5) mod 1000000007 (SimulatedFailure")
    timed_out = stack.cli("job", "wait", "1", "--timeout", "0.1")
    assert timed_out.returncode == 1  # finished already: failed is not done


def test_help_says_no_daemon_is_needed_and_imports_stay_light(jobs_stack):
    assert "without the daemon" in jobs_stack.cli("job", "--help").stdout
    assert "submit-job" in jobs_stack.cli("--help").stdout
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    for args in (["--help"], ["status", "--json"], ["job", "--help"]):
        result = jobs_stack.cli(*args, env=env)
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
        assert "procorch.cli" in imported
        assert not {"sqlite3", "redis", "procorch.jobs.api", "procorch.jobs.worker"} & imported
        # other commands do not even build the job commands
        assert ("procorch.cli.jobs" in imported) == (args[0] != "status")


def test_a_finished_job_reads_as_its_call_and_result_unquoted():
    from procorch.cli.jobs import _describe

    job = {"job_id": 4, "status": "done", "function": "send", "args": ["a@b"]}
    job |= {"kwargs": {"subject": "hi"}, "input": None, "mod": None, "error": None}
    job["result"] = {"sent": "a@b"}
    assert _describe(job) == 'job 4 done: send("a@b", subject="hi") = {"sent": "a@b"}'
    job["args"] = ["x" * 100]
    assert len(_describe(job)) <= 80  # long calls and results are cut to an 80-column line


def test_a_number_as_text_is_an_n_without_importing_the_job_modules(stack):
    from procorch.jobs.api import Jobs

    stack.write(jobs_table(modules=["no_such_module_here"]))  # importing it would fail
    assert stack.cli("job", "submit", "100").returncode == 0
    with Jobs.open(stack.config, stack.run_dir) as jobs:
        job_id = jobs.submit(" 1_0 ")  # the same test of integer text as the command's
        assert jobs.get(job_id)["input"] == 10
    result = stack.cli("job", "submit", "send")  # a name: the modules are imported
    assert_one_line_error(result, 2, "[jobs] modules: importing failed")


@pytest.mark.parametrize(("columns", "args_width"), [(200, 30), (75, 15), (40, 10)])
def test_job_list_cuts_args_to_the_terminal(jobs_stack, columns, args_width):
    long_args = json.dumps(["x" * 50])
    assert jobs_stack.cli("job", "submit", "fib", "--args", "[5]").returncode == 0
    jobs_stack.write(jobs_table(functions={"echo": "json:dumps"}))
    assert jobs_stack.cli("job", "submit", "echo", "--args", long_args).returncode == 0
    table = jobs_stack.cli("job", "list", env={"COLUMNS": str(columns)}).stdout.splitlines()
    header, _, echo = table[:3]
    start = header.index("args")
    assert echo[start : start + args_width].endswith("...")  # cut to the widest that fits
    assert echo[start + args_width : start + args_width + 2] == "  "
    if columns > 40:
        assert max(map(len, table)) <= columns
