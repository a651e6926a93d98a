"""The job queue under faults and hostile input: a full disk (a real tmpfs), Redis at its
maxmemory, a Redis password that must never be shown, integers past Python's
4300-digit limit, and owner-only files. Real processes, a real redis-server."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from procorch import Jobs
from procorch.jobs.fib import fib
from procorch.jobs.job import InvalidJob, JobTimeout, StoreFull, StoreUnavailable
from procorch.redaction import redact, scrub
from tests.conftest import GatewayStack, RedisServer, Stack, free_port, jobs_table, wait_for
from tests.test_cli import assert_one_line_error

FULL = "the job store is full"


# -- a small disk --------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `where` (made if missing) for the block."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to its last block; the filler file, to free it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12):  # big steps, then down to the last 4 KiB page
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


@contextlib.contextmanager
def on_a_small_disk(tmp_path: Path, kind: type[Stack] = Stack) -> Iterator[Any]:
    """A stack whose config and run directory are on a 4 MiB tmpfs. Its logs are on a
    tmpfs of their own (a separate log volume), so what the workers say about the full
    disk can be read afterwards."""
    with tmpfs(tmp_path / "disk", "4m") as disk:
        stack = kind(disk)
        logs = stack.run_dir / "logs"
        logs.mkdir(parents=True, mode=0o700)
        with tmpfs(logs, "16m"):
            try:
                yield stack
            finally:
                stack.cleanup()


@pytest.fixture
def disk_stack(tmp_path: Path) -> Iterator[Stack]:
    with on_a_small_disk(tmp_path) as stack:
        yield stack


def jobs_total(stack: Stack) -> int:
    return json.loads(stack.cli("job", "list", "--json").stdout)["total"]


def worker_logs(stack: Stack) -> list[str]:
    return [(stack.run_dir / "logs" / f"JobWorker.{i}.log").read_text() for i in (0, 1)]


def said_once_and_over(stack: Stack) -> None:
    """Each worker logged the full store once, however many tries, then its end (a worker
    still backing off when the last job finished says so within FULL_RETRY_MAX)."""
    wait_for(lambda: all("has room again" in log for log in worker_logs(stack)), timeout=5)
    for log in worker_logs(stack):
        assert log.count(FULL) == 1, log


def settled_workers(stack: Stack, pids: set[int]) -> None:
    """The workers are the same processes, running, heartbeating, never restarted."""
    workers = stack.replicas("JobWorker")
    assert {w["pid"] for w in workers} == pids
    for w in workers:
        assert (w["state"], w["restarts"]) == ("running", 0), w
        assert w["heartbeat_age"] is not None and w["heartbeat_age"] < 1.5, w


def test_a_full_disk_holds_jobs_until_room_is_made_without_a_restart(disk_stack):
    stack = disk_stack
    stack.write(jobs_table(delay=1.5))  # two workers, each holding a job while the disk fills
    stack.up()
    pids = {w["pid"] for w in stack.replicas("JobWorker")}
    with Jobs.open(stack.config) as jobs:
        ids = jobs.submit_many([5, 6, 7, 8])
        wait_for(lambda: jobs.list(status="running")["total"] == 2)
        filler = fill(stack.root)

        refused = stack.cli("job", "submit", "9")
        assert_one_line_error(refused, 1, FULL, f"free space in {stack.run_dir}")
        with pytest.raises(StoreFull, match=FULL):
            jobs.submit(9)
        assert stack.cli("job", "list").returncode == 0  # reading still works

        time.sleep(3)  # the two jobs end; their results, and new claims, find no room
        statuses = [job["status"] for job in jobs.list()["jobs"]]
        assert statuses == ["running", "running", "pending", "pending"]
        settled_workers(stack, pids)

        filler.unlink()  # room again: no `up`, no restart
        finished = [jobs.wait_job(job_id, timeout=15) for job_id in ids]
    expected = [("done", fib(n, 1_000_000_007)) for n in (5, 6, 7, 8)]
    assert [(j["status"], j["output"]) for j in finished] == expected
    # the held results were recorded, not the jobs run again; the refused submits left nothing
    assert [j["attempts"] for j in finished] == [1, 1, 1, 1]
    assert jobs_total(stack) == 4
    settled_workers(stack, pids)
    said_once_and_over(stack)


def test_the_gateway_answers_507_on_a_full_disk_and_serves_again_when_freed(tmp_path):
    with on_a_small_disk(tmp_path, GatewayStack) as gateway:
        gateway.write_gateway()
        gateway.up()
        assert gateway.post("/job/5").status_code == 200
        filler = fill(gateway.root)
        refused = gateway.post("/job/6")
        assert refused.status_code == 507, refused.text
        assert refused.json()["code"] == "store_full"
        assert FULL in refused.json()["message"]
        assert gateway.get("/health").status_code == 200  # the rest still answers
        filler.unlink()
        taken = gateway.post("/job/6")
        assert taken.status_code == 200, taken.text
        assert gateway.cli("job", "wait", str(taken.json()["job_id"])).returncode == 0


def test_the_api_on_a_full_disk_raises_store_full_even_opening(tmp_path):
    config = tmp_path / "procorch.toml"
    config.write_text(jobs_table())
    with tmpfs(tmp_path / "disk", "4m") as disk:
        run_dir = disk / "run"
        with Jobs.open(config, run_dir=run_dir) as jobs:
            first = jobs.submit(10)
            filler = fill(disk)
            with pytest.raises(StoreFull) as refused:
                jobs.submit_many([1, 2, 3])
            assert isinstance(refused.value, StoreUnavailable)  # handled as such where it was
            assert str(refused.value).startswith(f"{FULL}: {run_dir / 'jobs.db'}")
            with pytest.raises(StoreFull):
                jobs.cancel(first)
            assert jobs.get(first)["status"] == "pending"
            assert jobs.stats()["total"] == 1
        # no connection left: a new one needs room for its shared-memory file, and says so
        filler.unlink()
        with Jobs.open(config, run_dir=run_dir):
            pass
        assert not (run_dir / "jobs.db-shm").exists()
        filler = fill(disk)
        with pytest.raises(StoreFull, match=FULL):
            Jobs.open(config, run_dir=run_dir)
        assert_one_line_error(
            Stack(tmp_path).cli("job", "list", "--run-dir", str(run_dir)), 1, FULL
        )
        filler.unlink()
        with Jobs.open(config, run_dir=run_dir) as jobs:
            assert jobs.submit(11) == first + 1
            assert jobs.list()["total"] == 2


# -- Redis at its maxmemory ----------------------------------------------------------------


@contextlib.contextmanager
def redis_out_of_memory(server: RedisServer) -> Iterator[None]:
    """The shared server refusing every write that needs memory (maxmemory 1 byte,
    noeviction), until the block ends."""
    server.client.config_set("maxmemory-policy", "noeviction")
    server.client.config_set("maxmemory", 1)
    try:
        yield
    finally:
        server.client.config_set("maxmemory", 0)


def test_redis_at_maxmemory_is_store_full_and_workers_wait_for_it(stack, redis_url, redis_server):
    stack.write(jobs_table(backend=redis_url))
    stack.up()
    assert stack.cli("stop", "JobWorker").returncode == 0
    with Jobs.open(stack.config) as jobs:
        ids = jobs.submit_many([5, 6, 7])
        with redis_out_of_memory(redis_server):
            refused = stack.cli("job", "submit", "9")
            assert_one_line_error(refused, 1, FULL, "maxmemory")
            with pytest.raises(StoreFull, match="maxmemory"):
                jobs.submit(9)
            with pytest.raises(StoreFull):
                jobs.cancel(ids[0])
            # workers (re)started now cannot even create their consumer group: they wait
            assert stack.cli("start", "JobWorker").returncode == 0
            pids = {w["pid"] for w in stack.replicas("JobWorker")}
            time.sleep(2.5)
            settled_workers(stack, pids)
            assert [j["status"] for j in jobs.list()["jobs"]] == ["pending"] * 3
        finished = [jobs.wait_job(job_id, timeout=15) for job_id in ids]
    assert [(j["status"], j["output"]) for j in finished] == [("done", n) for n in (5, 8, 13)]
    assert jobs_total(stack) == 3
    settled_workers(stack, pids)
    said_once_and_over(stack)


# -- a Redis password is never shown -------------------------------------------------------

SECRET = "pw-Zq8x3Kt7"


def test_redact_hides_the_password_and_nothing_else():
    assert redact(f"redis://:{SECRET}@db.example:6379/0") == "redis://:***@db.example:6379/0"
    assert redact(f"rediss://bob:{SECRET}@[::1]:6380/2") == "rediss://bob:***@[::1]:6380/2"
    assert redact(f"redis://{SECRET}@h:1/0") == "redis://***@h:1/0"  # a bare password
    assert redact("redis://:se/c@ret@h:1/0") == "redis://:***@h:1/0"  # unencoded / and @
    assert redact(f"redis://:{SECRET}@h:port/0") == "redis://:***@h:port/0"  # not even valid
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact("sqlite") == "sqlite"
    url = "redis://:p%40ss%3Aword@h:1/0"
    said = scrub(f"AUTH p@ss:word refused for {url}; p%40ss%3Aword", url)
    assert said == "AUTH *** refused for redis://:***@h:1/0; ***"


@pytest.fixture
def password_url(redis_url: str, redis_server: RedisServer) -> Iterator[str]:
    """The shared server requiring SECRET for this test; its URL with the password."""
    redis_server.client.config_set("requirepass", SECRET)
    try:
        yield redis_url.replace("redis://", f"redis://:{SECRET}@")
    finally:
        with redis.Redis(port=redis_server.port, password=SECRET) as client:
            client.config_set("requirepass", "")


def outputs_without_the_secret(stack: Stack, *results: subprocess.CompletedProcess) -> None:
    """SECRET in no command's output and in no file of the run directory, but the one that
    must hold it: config.json, which the workers read the URL from."""
    for result in results:
        assert SECRET not in result.stdout + result.stderr, result
    for path in stack.run_dir.rglob("*"):
        if path.is_file() and path.name != "config.json":
            assert SECRET.encode() not in path.read_bytes(), path


def test_an_unreachable_redis_never_shows_its_password(stack):
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    shown = redact(url)
    stack.write(jobs_table(backend=url))
    results = []
    for args in (
        ["job", "submit", "5"],
        ["job", "submit", "5", "--wait"],
        ["job", "status", "1"],
        ["job", "wait", "1"],
        ["job", "cancel", "1"],
        ["job", "list"],
        ["job", "stats", "--json"],
    ):
        results.append(stack.cli(*args))
        assert_one_line_error(results[-1], 1, f"cannot reach redis at {shown}")
    with pytest.raises(StoreUnavailable) as caught:
        Jobs.open(stack.config)
    assert SECRET not in str(caught.value) and shown in str(caught.value)

    # the workers cannot start: their exit reasons reach status, events and the logs
    results.append(stack.cli("up"))
    wait_for(lambda: all(w["restarts"] >= 1 for w in stack.replicas("JobWorker")), timeout=15)
    results += [stack.cli(*args) for args in (["status", "--json"], ["events", "--json"])]
    results.append(stack.cli("logs", "JobWorker", "-n", "500"))
    assert f"cannot reach redis at {shown}" in results[-1].stdout
    assert any(shown in json.dumps(w) for w in stack.replicas("JobWorker"))
    outputs_without_the_secret(stack, *results)


def test_a_password_protected_redis_shows_its_password_nowhere(stack, password_url):
    stack.write(jobs_table(backend=password_url))
    results = [stack.cli("up"), stack.cli("job", "submit", "10", "--wait")]
    assert results[-1].stdout == "job 1 done: F(10) mod 1000000007 = 55\n", results[-1].stderr
    for args in (
        ["job", "status", "1", "--json"],
        ["job", "stats", "--json"],
        ["job", "list", "--json"],
        ["status", "--json"],
        ["events", "--json"],
        ["logs", "JobWorker"],
    ):
        results.append(stack.cli(*args))
        assert results[-1].returncode == 0, results[-1].stderr
    assert json.loads(results[3].stdout)["backend"] == "redis"

    # a wrong password: refused, without either password in the message
    wrong = password_url.replace(SECRET, SECRET[::-1])
    stack.write(jobs_table(backend=wrong))
    refused = stack.cli("job", "submit", "5")
    assert_one_line_error(refused, 1, f"cannot reach redis at {redact(wrong)}", "invalid")
    assert SECRET[::-1] not in refused.stderr
    results.append(refused)
    results.append(stack.cli("down"))
    outputs_without_the_secret(stack, *results)


def test_the_gateway_serves_and_logs_no_password(tmp_path):
    """A store error's 503 body (served to anyone the token lets in, everyone without a
    token) and the gateway's log of a failed /metrics scrape."""
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write_gateway(backend=url)
        results = [gateway.cli("up")]  # the workers cannot start; the gateway can
        wait_for(lambda: gateway.get("/health").status_code == 200, timeout=15)
        bodies = []
        for method, path in [("POST", "/job/10"), ("GET", "/job/1"), ("GET", "/jobs")]:
            response = gateway.request(method, path)
            assert response.status_code == 503, response.text
            assert f"cannot reach redis at {redact(url)}" in response.json()["message"]
            bodies.append(response.text)
        metrics = gateway.get("/metrics")
        assert "procorch_job_store_up 0.0" in metrics.text
        for body in [*bodies, metrics.text, gateway.get("/services").text]:
            assert SECRET not in body
        logs = gateway.cli("logs", "Gateway", "-n", "500")
        assert f"job store did not answer: cannot reach redis at {redact(url)}" in logs.stdout
        outputs_without_the_secret(gateway, *results, logs)
    finally:
        gateway.cleanup()


@pytest.mark.parametrize("backend", [f"redis://:{SECRET}@h:port/0", f"redis://:{SECRET}@/0"])
def test_a_bad_backend_url_in_the_config_is_refused_without_its_password(stack, backend):
    stack.write(jobs_table(backend=backend))
    for args in (["job", "submit", "5"], ["status"], ["up"]):
        result = stack.cli(*args)
        assert_one_line_error(result, 2, "jobs.backend", redact(backend))
        assert SECRET not in result.stdout + result.stderr


# -- integers past Python's 4300-digit limit -----------------------------------------------

HUGE = "1" * 5000


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["job", "submit", HUGE], "n must be from 0 to"),
        (["job", "submit", "5", HUGE], "n must be from 0 to"),
        (["submit-job", "--", "-" + HUGE], "n must be from 0 to"),
        (["job", "submit", "5", "--mod", HUGE], "mod must be from 2 to"),
        (["job", "status", HUGE], "job id must be from 1 to"),
        (["job", "wait", HUGE], "job id must be from 1 to"),
        (["job", "cancel", HUGE], "job id must be from 1 to"),
        (["job", "list", "--limit", HUGE], "limit must be from 0 to"),
        (["job", "submit", "x" * 5000], "n must be an integer, got 'xxx"),
    ],
)
def test_integers_of_thousands_of_digits_are_one_short_line(stack, args, needle):
    stack.write(jobs_table())
    result = stack.cli(*args)
    assert_one_line_error(result, 2, needle)
    assert len(result.stderr) < 200  # said, not repeated
    assert jobs_total(stack) == 0


def test_the_api_refuses_huge_integers_with_a_short_message(tmp_path):
    (tmp_path / "procorch.toml").write_text(jobs_table())
    with Jobs.open(tmp_path / "procorch.toml") as jobs:
        for call, value in (
            (jobs.submit, 10**5000),
            (jobs.submit, -(10**5000)),
            (jobs.submit, HUGE),
            (jobs.get, 10**5000),
            (jobs.wait, 10**5000),
            (jobs.cancel, HUGE),
            (lambda n: jobs.submit(1, mod=n), 10**5000),
        ):
            with pytest.raises(InvalidJob) as refused:
                call(value)
            assert "must be from" in str(refused.value)
            assert len(str(refused.value)) < 120
        with pytest.raises(InvalidJob, match="got an integer of 5001 digits$"):
            jobs.get(10**5000)
        assert jobs.list()["total"] == 0


# -- owner-only files ----------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_job_store_and_wake_sockets_are_owner_only_whatever_the_umask(tmp_path):
    (tmp_path / "procorch.toml").write_text(jobs_table())
    run_dir = tmp_path / "run"
    # what an older procorch, or a lax umask, left behind
    for directory in (run_dir / "wake", run_dir / "done"):
        directory.mkdir(parents=True)
        directory.chmod(0o755)
    old = os.umask(0)
    try:
        with Jobs.open(tmp_path / "procorch.toml", run_dir=run_dir) as jobs:
            jobs.submit(1)
            with pytest.raises(JobTimeout):
                jobs.wait_job(1, timeout=0.01)  # binds a socket in done/
            files = ["jobs.db", "jobs.db-wal", "jobs.db-shm"]
            assert {name: mode(run_dir / name) for name in files} == dict.fromkeys(files, 0o600)
        for directory in ("wake", "done"):
            assert mode(run_dir / directory) == 0o700
    finally:
        os.umask(old)
    # a jobs.db made readable by others is tightened when opened
    (run_dir / "jobs.db").chmod(0o644)
    with Jobs.open(tmp_path / "procorch.toml", run_dir=run_dir):
        assert mode(run_dir / "jobs.db") == 0o600
