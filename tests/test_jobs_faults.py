"""The job queue under faults and hostile input: a Redis password that must never be
shown, in any output. Real processes, a real redis-server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import redis

from procorch import Jobs
from procorch.jobs.job import StoreUnavailable
from procorch.redaction import redact, scrub
from tests.conftest import GatewayStack, RedisServer, Stack, free_port, jobs_table, wait_for
from tests.test_cli import assert_one_line_error

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
