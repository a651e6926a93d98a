"""The jobs' configuration: function tables and their policy, `modules`, worker queues,
and the retry schedule, a pure function of the policy."""

from __future__ import annotations

import pytest

from procorch.config import JobsSettings, load_config
from procorch.jobs.decorator import job
from procorch.jobs.functions import Policy, Registry
from procorch.jobs.job import InvalidJob
from tests.conftest import config_error, jobs_table, load_toml
from tests.test_cli import assert_one_line_error
from tests.test_jobs_functions import fresh_job_modules  # noqa: F401 (autouse)


def test_a_function_table_overrides_the_jobs_defaults(tmp_path):
    config = load_toml(
        tmp_path,
        jobs_table(max_attempts=2, result_ttl="1d")
        + '[jobs.functions]\nplain = "app.tasks:plain"\n'
        + 'send = { target = "app.tasks:send", max_attempts = 5, backoff = "fixed",'
        ' retry_delay = "2s", timeout = 30, priority = 7, result_ttl = -1, queue = "mail" }\n',
    )
    registry = Registry(config.jobs)
    assert registry.policy("plain") == Policy.of(config.jobs)
    assert registry.policy("plain").result_ttl == 86400
    send = registry.policy("send")
    assert (send.max_attempts, send.backoff, send.retry_delay, send.timeout) == (5, "fixed", 2, 30)
    assert (send.priority, send.result_ttl, send.queue) == (7, -1, "mail")


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            "send = { max_attempts = 5 }",
            "jobs.functions.send.target: expected 'package.module:function'",
        ),
        ('send = { target = "a:b", retries = 5 }', "unknown key 'retries'"),
        ('send = { target = "a:b", backoff = "linear" }', "expected one of 'exponential', 'fixed'"),
        ('send = { target = "a:b", result_ttl = "soon" }', 'a duration like "30s"'),
        ('send = { target = "a:b", queue = "a b" }', "invalid queue name 'a b'"),
    ],
)
def test_a_bad_function_table_is_one_line(tmp_path, table, problem):
    assert problem in config_error(tmp_path, jobs_table() + "[jobs.functions]\n" + table + "\n")


def test_queues_belong_to_job_workers_only(tmp_path):
    service = '[services.api]\ncommand = "true"\nqueues = ["mail"]\n'
    assert "only a JobWorker service" in config_error(tmp_path, service)
    worker = (
        '[services.Mail]\nmodule = "procorch.jobs.worker:JobWorker"\nqueues = ["mail", "mail"]\n'
    )
    config = load_toml(tmp_path, worker + jobs_table())
    assert config.service("Mail").queues == ("mail",)
    assert [s.name for s in config.services] == ["Mail"]  # no second, default JobWorker


def test_the_retry_schedule():
    exponential = Policy(retry_delay=0.5, backoff_max=3.0)
    assert [exponential.retry_in(n, lambda: 0.0) for n in (1, 2, 3, 4, 100)] == [0.5, 1, 2, 3, 3]
    fixed = Policy(backoff="fixed", retry_delay=2.0, jitter=0.5)
    assert [fixed.retry_in(n, lambda: 1.0) for n in (1, 5)] == [3.0, 3.0]  # 2 + up to 50%
    assert Policy.of(JobsSettings()).retry_in(1, lambda: 0.0) == 0.1  # as the first version


def test_the_decorator_checks_its_policy_as_the_config_does():
    with pytest.raises(TypeError, match="unknown option 'retries'"):
        job(name="x", retries=3)(lambda: None)
    with pytest.raises(TypeError, match="expected an integer ≥ 1"):
        job(name="x", max_attempts=0)(lambda: None)
    with pytest.raises(TypeError, match="'fib' is the built-in job"):
        job(name="fib")(lambda: None)


def test_a_module_that_does_not_import_is_a_config_error_before_anything_starts(stack):
    (stack.root / "tasks.py").write_text("import no_such_thing\n")
    stack.write(jobs_table(modules=["tasks"]))
    assert_one_line_error(stack.cli("up"), 2, "jobs.modules: importing 'tasks' raised")
    assert stack.daemon_pid() is None
    with pytest.raises(InvalidJob, match=r"\[jobs\] modules: importing failed"):
        Registry(load_config(stack.config).jobs, stack.root).names()
