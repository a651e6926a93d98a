"""The job record, the built-in job and the Python API on a real jobs.db, without workers."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

import pytest

import procorch
from procorch.jobs.fib import fib
from procorch.jobs.job import FIELDS, FINISHED, TRANSITIONS, Status, iso
from procorch.jobs.sqlite_store import SQLiteStore
from procorch.jobs.store import DURATION_BUCKETS, Durations, WorkerId, duration_bucket
from tests.conftest import jobs_table

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def naive_fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def test_reference_outputs():
    assert fib(100, 1_000_000_007) == 687995182
    assert fib(100, 1000) == 75
    assert [fib(n, 10**30) for n in range(10)] == [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]
    for n in range(300):
        assert fib(n, 1_000_000_007) == naive_fib(n) % 1_000_000_007
        assert fib(n, 2) == naive_fib(n) % 2


def matrix_fib(n: int, mod: int) -> int:
    """F(n) mod m another way: [[1, 1], [1, 0]] ** n by repeated squaring."""

    def times(x, y):
        return [
            [sum(x[i][k] * y[k][j] for k in range(2)) % mod for j in range(2)] for i in range(2)
        ]

    result, power = [[1, 0], [0, 1]], [[1, 1], [1, 0]]
    while n:
        if n & 1:
            result = times(result, power)
        power = times(power, power)
        n >>= 1
    return result[0][1]


def test_every_allowed_n_is_cheap_and_right():
    for n, mod in [(10**18, 1_000_000_007), (10**18, 2**63 - 1), (123456789012345, 1000)]:
        started = time.perf_counter()
        value = fib(n, mod)
        assert time.perf_counter() - started < 0.01
        assert value == matrix_fib(n, mod)


def test_transition_table():
    assert TRANSITIONS[Status.PENDING] == {Status.RUNNING, Status.CANCELLED}
    assert TRANSITIONS[Status.RUNNING] == {
        Status.DONE,
        Status.FAILED,
        Status.PENDING,
        Status.CANCELLED,
    }
    assert TRANSITIONS[Status.WAITING] == {Status.PENDING, Status.CANCELLED}
    for status in FINISHED:
        # final, but for a requeue of the dead letters
        assert TRANSITIONS[status] == ({Status.PENDING} if status == Status.FAILED else set())
        assert status.finished
    assert not Status.PENDING.finished
    assert not Status.WAITING.finished


def test_times_are_iso_8601_utc():
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1.2346) == "1970-01-01T00:00:01.235Z"
    assert iso(None) is None


@pytest.fixture
def jobs(tmp_path):
    (tmp_path / "procorch.toml").write_text(jobs_table(max_n=1000, mod=97))
    with procorch.Jobs.open(tmp_path / "procorch.toml") as jobs:
        yield jobs


def test_a_submitted_job_has_every_field(jobs):
    before = datetime.now(UTC)
    job_id = jobs.submit(10)
    job = jobs.get(job_id)
    assert tuple(job) == FIELDS
    assert job == {
        **job,
        "job_id": job_id,
        "status": "pending",
        "function": "fib",
        "input": 10,
        "mod": 97,  # the config's default modulus
        "output": None,
        "error": None,
        "attempts": 0,
        "started_time": None,
        "finished_time": None,
        "worker": None,
    }
    assert ISO.fullmatch(job["init_time"])
    init = datetime.strptime(job["init_time"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert abs((init - before).total_seconds()) < 5
    assert jobs.get(jobs.submit(10, mod=1000))["mod"] == 1000


def test_ids_count_from_one_and_are_never_reused(jobs, tmp_path):
    assert jobs.submit(1) == 1
    assert jobs.submit_many([2, 3, 4]) == [2, 3, 4]
    assert jobs.submit_many([]) == []
    # even after the newest row is gone (AUTOINCREMENT keeps the high-water mark)
    jobs._store.db.execute("DELETE FROM jobs WHERE job_id = 4")
    assert jobs.submit(5) == 5


@pytest.mark.parametrize(
    ("n", "mod", "message"),
    [
        (-1, None, "n must be from 0 to 1000, got -1"),
        (1001, None, "n must be from 0 to 1000, got 1001"),
        ("ten", None, "n must be an integer, got 'ten'"),
        (1.5, None, "n must be an integer, got 1.5"),
        (True, None, "n must be an integer, got True"),
        (5, 1, "mod must be from 2 to"),
        (5, "x", "mod must be an integer, got 'x'"),
    ],
)
def test_bad_input_is_refused_with_one_line(jobs, n, mod, message):
    with pytest.raises(procorch.InvalidJob, match=re.escape(message)):
        jobs.submit(n, mod)
    assert jobs.list()["total"] == 0


def test_a_batch_is_all_or_nothing(jobs):
    with pytest.raises(procorch.InvalidJob):
        jobs.submit_many([1, 2, 5000])
    assert jobs.list()["total"] == 0


def test_numbers_as_text_are_accepted(jobs):
    assert jobs.get(jobs.submit(" 12 "))["input"] == 12


def test_unknown_function_is_refused(jobs):
    with pytest.raises(procorch.InvalidJob, match="unknown job function 'os_system'"):
        jobs.submit(1, function="os_system")


def test_not_found(jobs):
    with pytest.raises(procorch.JobNotFound, match="no job with id 7"):
        jobs.get(7)
    with pytest.raises(procorch.JobNotFound):
        jobs.cancel(7)
    with pytest.raises(procorch.InvalidJob, match="job id must be"):
        jobs.get(0)


def test_list_pages_and_filters(jobs):
    ids = jobs.submit_many(list(range(10)))
    jobs.cancel(ids[3])
    page = jobs.list(limit=4, offset=2)
    assert [j["job_id"] for j in page["jobs"]] == ids[2:6]
    assert (page["count"], page["total"]) == (4, 10)
    cancelled = jobs.list(status="cancelled")
    assert [j["job_id"] for j in cancelled["jobs"]] == [ids[3]]
    assert (cancelled["count"], cancelled["total"]) == (1, 1)
    assert jobs.list(status="PENDING")["total"] == 9
    with pytest.raises(procorch.InvalidJob, match="unknown status 'nope'"):
        jobs.list(status="nope")
    with pytest.raises(procorch.InvalidJob, match="limit"):
        jobs.list(limit=-1)


def test_cancel_pending_and_not_twice(jobs):
    job_id = jobs.submit(5)
    job = jobs.cancel(job_id)
    assert job["status"] == "cancelled"
    assert ISO.fullmatch(job["finished_time"])
    assert job["output"] is None
    with pytest.raises(procorch.JobError, match=f"job {job_id} is already cancelled"):
        jobs.cancel(job_id)


def test_wait_times_out_without_workers(jobs):
    job_id = jobs.submit(5)
    with pytest.raises(procorch.JobTimeout, match=f"job {job_id} is still pending after 0.2s"):
        jobs.wait_job(job_id, timeout=0.2)
    assert jobs.wait_job(jobs.cancel(job_id)["job_id"])["status"] == "cancelled"


def test_stats_count_every_status(jobs):
    ids = jobs.submit_many([1, 2, 3])
    jobs.cancel(ids[0])
    stats = jobs.stats()
    assert stats["counts"] == {
        "waiting": 0,
        "pending": 2,
        "running": 0,
        "done": 0,
        "failed": 0,
        "cancelled": 1,
    }
    assert stats["total"] == 3
    assert stats["throughput"] == {"last_10s": 0.0, "last_60s": 0.0}
    # the counts kept by triggers are the table's, whatever moved
    jobs._store.db.execute("UPDATE jobs SET status = 'done' WHERE job_id = ?", (ids[1],))
    jobs._store.db.execute("DELETE FROM jobs WHERE job_id = ?", (ids[2],))
    table = dict(jobs._store.db.execute("SELECT status, count(*) FROM jobs GROUP BY status"))
    assert (
        {s: n for s, n in jobs.stats()["counts"].items() if n}
        == table
        == {
            "done": 1,
            "cancelled": 1,
        }
    )


def test_module_level_conveniences(tmp_path, monkeypatch):
    (tmp_path / "procorch.toml").write_text(jobs_table())
    monkeypatch.chdir(tmp_path)
    job_id = procorch.submit(100, 1000)
    assert procorch.get_job(job_id)["mod"] == 1000
    assert procorch.list_jobs()["total"] == 1
    assert procorch.cancel_job(job_id)["status"] == "cancelled"
    assert procorch.wait_job(job_id, timeout=1)["status"] == "cancelled"
    assert (tmp_path / ".procorch" / "jobs.db").exists()


def test_wal_the_durability_setting_and_owner_only_files(tmp_path):
    import stat

    for synchronous, level in (("normal", 1), ("full", 2)):
        config = tmp_path / f"{synchronous}.toml"
        config.write_text(jobs_table(synchronous=synchronous))
        run_dir = tmp_path / synchronous
        with procorch.Jobs.open(config, run_dir=run_dir) as jobs:
            jobs.submit(1)
            db = jobs._store.db
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA synchronous").fetchone()[0] == level
        for path in (run_dir, run_dir / "wake", run_dir / "done"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700


# -- the duration histogram ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def any_jobs(request, tmp_path):
    """The API on either store (no workers: the tests drive the store's finish themselves)."""
    backend = "sqlite" if request.param == "sqlite" else request.getfixturevalue("redis_url")
    (tmp_path / "procorch.toml").write_text(jobs_table(backend=backend))
    with procorch.Jobs.open(tmp_path / "procorch.toml") as jobs:
        yield jobs


def finish_after(jobs: procorch.Jobs, seconds: float) -> None:
    """Claim a new job and finish it done as though its attempt ran exactly `seconds`.

    The store's own bookkeeping observes it (SQLite's trigger, Redis's finish script);
    only the times are chosen: started at 0, finished at `seconds`, so the difference
    is exactly `seconds`.
    """
    store, worker = jobs._store, WorkerId.current("JobWorker", 0)
    jobs.submit(1)
    claim = store.claim(worker, 0.1)
    assert claim is not None
    if isinstance(store, SQLiteStore):
        store.db.execute(
            "UPDATE jobs SET status = 'done', output = 1, started_time = 0, finished_time = ?"
            " WHERE job_id = ?",
            (seconds, claim.job_id),
        )
    else:
        store.client.hset(f"procorch:job:{claim.job_id}", "started_time", "0")
        args = (claim.entry, repr(seconds), worker.label, claim.attempts, "done", "1", "0", "")
        store._run("finish", claim.job_id, *args, "output", "-1", "*")


def test_a_duration_on_a_bound_is_counted_in_that_bucket():
    # Prometheus's `le`: a bucket counts durations up to and including its bound
    assert [duration_bucket(b) for b in DURATION_BUCKETS] == list(range(len(DURATION_BUCKETS)))
    assert duration_bucket(0.0) == 0
    assert duration_bucket(math.nextafter(0.005, 1)) == 1
    assert duration_bucket(61.0) == len(DURATION_BUCKETS)  # +Inf
    histogram = Durations.from_counts([1] + [0] * 12 + [2], 7.5)
    assert histogram.buckets[0] == (0.005, 1)
    assert histogram.buckets[-2:] == ((60.0, 1), (math.inf, 3))
    assert (histogram.count, histogram.sum) == (3, 7.5)


def test_both_stores_bucket_durations_as_python_does(any_jobs):
    empty = any_jobs._store.durations()
    assert empty == Durations.from_counts([0] * (len(DURATION_BUCKETS) + 1), 0.0)
    seconds = [0.0, 0.005, math.nextafter(0.005, 1), 0.05, 1.0, 60.0, math.nextafter(60, 61)]
    seconds += [3600.0]
    for duration in seconds:
        finish_after(any_jobs, duration)
    expected = [0] * (len(DURATION_BUCKETS) + 1)
    for duration in seconds:
        expected[duration_bucket(duration)] += 1
    durations = any_jobs._store.durations()
    assert durations.buckets == Durations.from_counts(expected, 0.0).buckets
    assert durations.count == len(seconds) == any_jobs.stats()["counts"]["done"]
    assert durations.sum == pytest.approx(sum(seconds))


def test_a_jobs_db_from_before_the_histogram_opens_and_counts_from_then(tmp_path):
    config = tmp_path / "procorch.toml"
    config.write_text(jobs_table())
    with procorch.Jobs.open(config) as jobs:  # made as an older procorch made it
        jobs._store.db.execute("DROP TRIGGER jobs_durations")
        jobs._store.db.execute("DROP TABLE durations")
        finish_after(jobs, 0.2)
    with procorch.Jobs.open(config) as jobs:
        assert jobs.stats()["durations"]["count"] == 0  # finished before: not counted
        finish_after(jobs, 0.2)
        stats = jobs.stats()
    assert stats["counts"]["done"] == 2
    assert (stats["durations"]["count"], stats["durations"]["sum"]) == (1, 0.2)
    assert stats["durations"]["buckets"][5] == [0.25, 1]
