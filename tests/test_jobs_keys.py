"""Idempotent submission: a key makes a submission once, on both stores, also when
several processes retry it at the same moment."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid

import pytest

import procorch
from procorch.jobs.store import KEY_TTL
from tests.conftest import PY, jobs_table


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """A config on either store, and the API open on it."""
    backend = "sqlite" if request.param == "sqlite" else request.getfixturevalue("redis_url")
    config = tmp_path / "procorch.toml"
    config.write_text(jobs_table(backend=backend))
    with procorch.Jobs.open(config) as jobs:
        yield config, jobs


def test_a_key_submits_once(store):
    _, jobs = store
    key = uuid.uuid4().hex
    first = jobs.submit(10, key=key)
    assert jobs.submit(10, key=key) == first  # a retry: the same job, nothing new
    assert jobs.submit(10) != first  # without a key, every submit is a job
    assert jobs.submit(10, key=uuid.uuid4().hex) != first  # another key: another job
    batch_key = uuid.uuid4().hex
    ids = jobs.submit_many([1, 2, 3], key=batch_key)
    assert jobs.submit_many([1, 2, 3], key=batch_key) == ids
    assert len(set(ids)) == 3


def test_a_key_used_for_other_jobs_is_a_conflict(store):
    _, jobs = store
    key = uuid.uuid4().hex
    first = jobs.submit(10, key=key)
    for retry in (lambda: jobs.submit(11, key=key), lambda: jobs.submit(10, 99, key=key)):
        with pytest.raises(procorch.JobConflict, match="was used for other jobs"):
            retry()
    assert jobs.get(first)["input"] == 10


@pytest.mark.parametrize("key", ["", "x" * 256, "clé", "two\nlines", "a space", 7])
def test_bad_keys_are_refused(store, key):
    _, jobs = store
    before = jobs.stats()["total"]
    with pytest.raises(procorch.InvalidJob, match="idempotency key must be"):
        jobs.submit(1, key=key)
    assert jobs.stats()["total"] == before


def test_processes_racing_with_one_key_make_one_job(store):
    config, jobs = store
    key = uuid.uuid4().hex
    before = jobs.stats()["total"]
    racers = [
        subprocess.Popen(
            [PY, "-m", "procorch", "job", "submit", "20", "-k", key, "--json", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    answers = [r.communicate(timeout=60) for r in racers]
    assert all(r.returncode == 0 for r in racers), answers
    ids = {json.loads(out)["job_id"] for out, _ in answers}
    assert len(ids) == 1
    assert jobs.stats()["total"] == before + 1


def test_the_cli_says_a_conflict_in_one_line(store):
    config, _ = store
    key = uuid.uuid4().hex
    args = ("-k", key, "-c", str(config))
    run = [PY, "-m", "procorch", "job", "submit"]
    first = subprocess.run([*run, "5", *args], capture_output=True, text=True)
    again = subprocess.run([*run, "5", *args], capture_output=True, text=True)
    assert first.returncode == again.returncode == 0
    assert first.stdout == again.stdout
    other = subprocess.run([*run, "6", *args], capture_output=True, text=True)
    assert other.returncode == 1
    assert other.stderr.strip().count("\n") == 0 and "was used for other jobs" in other.stderr


def test_keys_are_forgotten_after_a_day(tmp_path):
    config = tmp_path / "procorch.toml"
    config.write_text(jobs_table())
    with procorch.Jobs.open(config) as jobs:
        first = jobs.submit(3, key="daily")
        with sqlite3.connect(tmp_path / ".procorch" / "jobs.db") as db:  # a day goes by
            db.execute("UPDATE job_keys SET created = created - ?", (KEY_TTL + 1,))
        assert jobs.submit(3, key="daily") != first


def test_redis_keys_expire_by_themselves(redis_url, tmp_path):
    import redis

    config = tmp_path / "procorch.toml"
    config.write_text(jobs_table(backend=redis_url))
    key = uuid.uuid4().hex
    with procorch.Jobs.open(config) as jobs:
        jobs.submit(3, key=key)
    ttl = redis.Redis.from_url(redis_url).ttl(f"procorch:key:{key}")
    assert 0 < ttl <= KEY_TTL


def test_the_gateways_job_posts_take_an_idempotency_key(gateway):
    key = uuid.uuid4().hex
    headers = {"Idempotency-Key": key}
    total = gateway.get("/jobs").json()["total"]
    first = gateway.post("/job/7", headers=headers)
    assert first.status_code == 200, first.text
    again = gateway.post("/job/7", headers=headers)
    assert again.json() == first.json()  # the same job, not another
    other = gateway.post("/job/8", headers=headers)
    assert other.status_code == 409 and "was used for other jobs" in other.json()["message"]
    process_key = {"Idempotency-Key": uuid.uuid4().hex}
    process = [gateway.post("/process", json={"n": 9}, headers=process_key) for _ in range(2)]
    assert process[0].json()["job_id"] == process[1].json()["job_id"]
    bad = gateway.post("/job/7", headers={"Idempotency-Key": "two words"})
    assert bad.status_code == 400
    assert gateway.get("/jobs").json()["total"] == total + 2
    doc = gateway.get("/openapi.json").json()
    for path in ("/job/{id}", "/process"):
        operation = doc["paths"][path]["post"]
        assert "Idempotency-Key" in [p["name"] for p in operation["parameters"]]
        assert "409" in operation["responses"]
