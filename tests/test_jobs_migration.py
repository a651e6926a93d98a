"""A queue written by the first version (commit 7ecd6a0: Fibonacci jobs only) is migrated
on first open, on SQLite and on Redis, without losing a job, an id, a count or a key.

The old queue is made by the old code itself: the procorch package of that commit,
taken out of git into a temporary directory and run in a subprocess."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from procorch import Jobs
from procorch.jobs.fib import fib
from tests.conftest import PY, Stack, jobs_table

FIRST_VERSION = "7ecd6a0"
REPO = Path(__file__).resolve().parent.parent

# Run by the first version's code: pending, done, cancelled, keyed and a job left running
# by a worker that is gone (pid 999999 with a start time no process has).
OLD_WRITER = """
import json, sys
from pathlib import Path
from procorch.jobs.api import Jobs
from procorch.jobs.store import WorkerId

with Jobs.open(Path(sys.argv[1])) as jobs:
    ids = jobs.submit_many([10, 11, 12, 13, 14])
    keyed = jobs.submit(15, key="first-key")
    jobs.cancel(ids[1])
    store = jobs._store
    gone = WorkerId("JobWorker.0", "oldhost:JobWorker.0:999999", 999999, 1)
    done = store.claim(gone, 0.1)
    store.finish(gone, done, 55, None, claim_next=False)
    left_running = store.claim(gone, 0.1)
    print(json.dumps({"ids": ids, "keyed": keyed, "running": left_running.job_id}))
"""


@pytest.fixture(scope="module")
def first_version(tmp_path_factory) -> Path:
    """The first version's procorch package, from git."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", FIRST_VERSION, "procorch"],
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {FIRST_VERSION} is not in this checkout's history")
    root = tmp_path_factory.mktemp("first-version")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture(params=["sqlite", "redis"])
def backend(request) -> str:
    return "sqlite" if request.param == "sqlite" else request.getfixturevalue("redis_url")


def test_the_first_versions_queue_is_migrated_without_losing_a_job(
    stack: Stack, backend, first_version
):
    stack.write(jobs_table(backend=backend))
    old = subprocess.run(
        [PY, "-c", OLD_WRITER, str(stack.config)],
        env={"PYTHONPATH": str(first_version), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert old.returncode == 0, old.stderr
    made = json.loads(old.stdout)
    ids, keyed, running = made["ids"], made["keyed"], made["running"]
    assert ids == [1, 2, 3, 4, 5] and keyed == 6 and running == 3

    with Jobs.open(stack.config) as jobs:  # the first open migrates
        before = {job["job_id"]: job for job in jobs.list()["jobs"]}
        assert sorted(before) == [1, 2, 3, 4, 5, 6]
        assert [before[i]["status"] for i in range(1, 7)] == [
            "done", "cancelled", "running", "pending", "pending", "pending"
        ]  # fmt: skip
        assert (before[1]["output"], before[1]["result"], before[1]["args"]) == (
            55,
            55,
            [10, 1_000_000_007],
        )
        assert jobs.stats()["counts"] == {
            "waiting": 0,
            "pending": 3,
            "running": 1,
            "done": 1,
            "failed": 0,
            "cancelled": 1,
        }
        assert jobs.submit(15, key="first-key") == keyed  # the key still holds
        # workers of this version run what the old queue held, the dead worker's job too
        burst = stack.cli("job", "work", "--burst", timeout=60)
        assert burst.returncode == 0, burst.stderr
        after = {job["job_id"]: job for job in jobs.list()["jobs"]}
        for job_id in (3, 4, 5, 6):
            job = after[job_id]
            assert (job["status"], job["output"]) == ("done", fib(job["input"], 1_000_000_007))
        assert after[3]["attempts"] == 2  # the old attempt counted, the job run again
        assert after[2]["status"] == "cancelled"
        assert jobs.stats()["counts"]["done"] == 5
        assert jobs.submit(20) == 7  # ids go on from the old high-water mark
        assert jobs.submit("fib", args=[21], priority=3) == 8
