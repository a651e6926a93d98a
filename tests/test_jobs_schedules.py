"""Schedules fired by a real daemon: every tick once, across a kill -9, on SQLite and Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import defaultdict

import pytest

from procorch import Jobs
from procorch.jobs.scheduler import read_state
from tests.conftest import config_error, epoch, jobs_table, load_toml, wait_for

FIRED = re.compile(r"\(schedule:(?P<name>[^:]+):(?P<tick>\d+)\): job (?P<job>\d+)")
MISSED = re.compile(r"^(?P<name>\S+): (?P<count>\d+) tick\(s\) missed")


def schedules_toml(backend: str = "sqlite", **schedules: str) -> str:
    lines = [f"{name} = {{ {body} }}" for name, body in schedules.items()]
    return jobs_table(backend=backend) + "\n[jobs.schedules]\n" + "\n".join(lines) + "\n"


def fired(stack) -> dict[int, set[int]]:
    """tick -> the job ids its schedule-fired events named."""
    ticks: dict[int, set[int]] = defaultdict(set)
    for event in stack.events():
        if event["event"] == "schedule-fired":
            match = FIRED.search(event["detail"])
            assert match, event
            ticks[int(match["tick"])].add(int(match["job"]))
    return ticks


def missed(stack) -> int:
    found = [MISSED.match(e["detail"]) for e in stack.events() if e["event"] == "schedule-missed"]
    return sum(int(m["count"]) for m in found if m)


def all_jobs(stack) -> list[dict]:
    with Jobs.open(stack.config) as jobs:
        return jobs.list(limit=1000)["jobs"]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request) -> str:
    return "sqlite" if request.param == "sqlite" else request.getfixturevalue("redis_url")


def test_every_second_for_five_seconds_runs_five_jobs(stack, backend):
    stack.write(schedules_toml(backend, often='function = "fib", every = "1s", args = [90]'))
    before_up = time.time()
    stack.up()
    # the scheduler starts with the daemon, just before its daemon-start event: the five
    # seconds are counted from there, however long `up` took to return
    begun = epoch(next(e["time"] for e in stack.events() if e["event"] == "daemon-start"))
    time.sleep(max(0.0, begun + 5 - time.time()))  # the passing of time is what is tested
    stack.cli("down")
    ended = epoch(next(e["time"] for e in stack.events() if e["event"] == "daemon-stop"))
    jobs = all_jobs(stack)
    ticks = fired(stack)
    assert 4 <= len([tick for tick in ticks if tick <= begun + 5]) <= 6, ticks
    assert all(len(ids) == 1 for ids in ticks.values()), ticks
    assert sorted(j for ids in ticks.values() for j in ids) == [j["job_id"] for j in jobs]
    assert all(before_up < tick <= ended for tick in ticks)  # nothing from before its start
    # one a second: every tick from the first to the last ran, or was counted as missed
    assert max(ticks) - min(ticks) + 1 == len(ticks) + missed(stack)
    drained = stack.cli("job", "work", "--burst")  # what `down` left queued runs now
    assert drained.returncode == 0, drained.stderr
    jobs = all_jobs(stack)
    assert {j["status"] for j in jobs} == {"done"}, jobs
    assert {j["result"] for j in jobs} == {2880067194370816120 % 1_000_000_007}
    listed = json.loads(stack.cli("job", "schedules", "--json").stdout)
    assert listed[0]["name"] == "often" and listed[0]["every"] == 1
    assert listed[0]["last_job_id"] == max(j["job_id"] for j in jobs)
    assert listed[0]["last"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(ticks)))


def test_no_tick_runs_twice_or_is_skipped_silently_across_a_kill_9(stack):
    stack.write(schedules_toml(often='function = "fib", every = "1s", args = [10]'))
    stack.up()
    wait_for(lambda: len(fired(stack)) >= 2, timeout=10)
    noted = read_state(stack.run_dir)["often"]["done_until"]  # every tick up to it is done
    os.kill(stack.daemon_pid(), signal.SIGKILL)
    stack.up()
    upped = time.time()
    before = len(fired(stack))
    wait_for(lambda: len(fired(stack)) >= before + 3, timeout=10)
    stack.cli("down")
    ticks = fired(stack)
    assert all(len(ids) == 1 for ids in ticks.values()), ticks  # a tick fired again: same job
    jobs = all_jobs(stack)
    assert len(jobs) == len(ticks)  # one job per tick
    # every tick from the first to the last ran, or was counted as missed in an event
    assert max(ticks) - min(ticks) + 1 == len(ticks) + missed(stack)
    # only the ticks the daemon was down for are missed: those after the last one noted
    # before the kill and before the latest one when the new scheduler first looked (as
    # it starts, before `up` returns)
    assert missed(stack) <= max(0, int(upped) - int(noted) - 1), (noted, upped)


def test_a_bad_schedule_is_one_line_and_exit_2(stack):
    stack.write(schedules_toml(bad='function = "fib", every = "1.5s"'))
    for command in (["up"], ["job", "schedules"]):
        result = stack.cli(*command)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "procorch: procorch.toml: jobs.schedules.bad.every: expected a whole number of "
            "seconds, at least 1, got '1.5s'"
        ]
    assert not (stack.run_dir / "procorch.pid").exists()
    stack.write(schedules_toml(bad='function = "nope", cron = "0 3 * * *"'))
    result = stack.cli("job", "schedules")
    assert result.returncode == 2
    assert "jobs.schedules.bad.function: unknown job function 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_job_schedules_lists_the_next_tick_without_a_daemon(stack):
    stack.write(
        schedules_toml(
            hourly='function = "fib", every = "1h", args = [7], kwargs = { mod = 5 }',
            nightly='function = "fib", cron = "30 2 * * *", timezone = "Asia/Tokyo"',
        )
    )
    now = time.time()
    listed = {s["name"]: s for s in json.loads(stack.cli("job", "schedules", "--json").stdout)}
    hour = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime((int(now) // 3600 + 1) * 3600))
    assert listed["hourly"]["next"] == hour  # on the hour: every daemon agrees on the ticks
    assert listed["nightly"]["next"].endswith("T17:30:00Z")  # 02:30 in Tokyo, UTC+9
    assert listed["hourly"]["last"] is None
    table = stack.cli("job", "schedules")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["schedule", "job", "when", "next", "(UTC)", "last", "(UTC)"]
    assert lines[2].split()[:4] == ["hourly", "fib(7,", "mod=5)", "every"]
    assert "cron 30 2 * * * (Asia/Tokyo)" in lines[3]
    stack.write(jobs_table())
    assert "no schedules" in stack.cli("job", "schedules").stdout


def test_a_store_that_refuses_is_reported_and_tried_again(tmp_path):
    """The scheduler alone (as the daemon runs it): Redis down is an event, not its end;
    once Redis is up the due tick fires."""
    from procorch.config import JobsSettings
    from procorch.jobs.scheduler import Scheduler
    from tests.conftest import _redis_binary, free_port

    port = free_port()
    often = {"function": "fib", "every": 1, "args": [5]}
    settings = JobsSettings(backend=f"redis://:s3cret@127.0.0.1:{port}/0", schedules={"x": often})
    scheduler = Scheduler(settings, tmp_path)
    reports: list[tuple[str, str]] = []
    server = None
    scheduler.start()
    try:
        wait_for(lambda: reports.extend(scheduler.reports()) or reports, timeout=10)
        event, detail = reports[0]
        assert event == "schedule-error" and "trying again in" in detail
        assert "s3cret" not in detail
        server = subprocess.Popen(
            [_redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass",
             "s3cret", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

        def fired() -> bool:
            reports.extend(scheduler.reports())
            return any(event == "schedule-fired" for event, _ in reports)

        wait_for(fired, timeout=15)
    finally:
        scheduler.stop()
        if server is not None:
            server.kill()
            server.wait()


def test_a_reload_that_changes_the_schedules_is_refused(tmp_path):
    """The scheduler starts with the daemon: schedules change with `down` and `up`."""
    from procorch.supervisor.reloadplan import plan

    old = load_toml(tmp_path, schedules_toml(often='function = "fib", every = "1s"'))
    new = load_toml(tmp_path, schedules_toml(often='function = "fib", every = "2s"'))
    assert plan(old, new).refused == {"[jobs] schedules": "the scheduler starts with the daemon"}


@pytest.mark.parametrize(
    ("every", "seconds"),
    [('"30s"', 30), ('"5m"', 300), ('"1h"', 3600), ('"1d"', 86400), ("90", 90)],
)
def test_every_takes_whole_seconds(tmp_path, every, seconds):
    config = load_toml(tmp_path, schedules_toml(x=f'function = "fib", every = {every}'))
    assert config.jobs.schedules["x"]["every"] == seconds


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('every = "0s"', "x.every: expected a whole number of seconds, at least 1, got '0s'"),
        ('every = "soon"', "x.every: expected seconds or a duration like"),
        ('cron = "61 * * * *"', "x.cron: expected a cron expression like '0 3 * * *'"),
        ('cron = "* * * * *", every = "1s"', "x: give either `cron` or `every`, not both"),
        ('every = "1s", timezone = "UTC"', "x.timezone: only used with `cron`"),
        ('cron = "@daily", timezone = "Mars/Base"', "x.timezone: unknown time zone 'Mars/Base'"),
        ('every = "1s", args = 3', "x.args: expected a list, got 3"),
        ('every = "1s", args = [1979-05-27]', "x.args: not JSON"),
    ],
)
def test_bad_schedules_name_the_key(tmp_path, body, problem):
    message = config_error(tmp_path, schedules_toml(x=f'function = "fib", {body}'))
    assert message.startswith(f"jobs.schedules.{problem}"), message


def test_a_schedule_of_a_decorated_function_passes_its_json_arguments(stack):
    (stack.root / "tasks.py").write_text(
        "import procorch\n\n\n"
        "@procorch.job(name='echo')\n"
        "def echo(*args, **kwargs):\n"
        "    return {'args': list(args), 'kwargs': kwargs}\n"
    )
    toml = schedules_toml(
        e='function = "echo", every = "1s", args = [1, "a"], kwargs = { to = "x" }'
    )
    stack.write(toml.replace("[jobs]\n", '[jobs]\nmodules = ["tasks"]\n'))
    stack.up()
    with Jobs.open(stack.config) as jobs:
        first = wait_for(lambda: jobs.list()["jobs"], timeout=10)[0]
        job = jobs.wait_job(first["job_id"], timeout=10)
    assert (job["function"], job["status"]) == ("echo", "done")
    assert job["result"] == {"args": [1, "a"], "kwargs": {"to": "x"}}
