"""`up` refuses a Python service or job function that does not import, before anything starts."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from procorch.config import load_config
from procorch.importcheck import targets
from tests.conftest import FIXTURES, python_service


def assert_refused(stack, result: subprocess.CompletedProcess, line: str) -> None:
    """Exit 2, exactly `line` (after "procorch: "), no traceback, nothing started."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"procorch: {line}\n"
    assert not stack.run_dir.exists()  # no daemon, no run directory, no process
    assert stack.leftovers() == []


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("nope.mod:Cls", "cannot import 'nope.mod': No module named 'nope'"),
        ("services:Nope", "module 'services' has no 'Nope'"),
        ("services:Steddy", "module 'services' has no 'Steddy' (did you mean 'Steady'?)"),
        (
            "raises_on_import:Api",
            "importing 'raises_on_import' raised RuntimeError: cannot reach the config server",
        ),
        ("services:NotFound", "'services:NotFound' is not a procorch Service subclass"),
    ],
    ids=["no-module", "no-class", "typo", "raises", "not-a-service"],
)
def test_a_service_that_does_not_import_is_refused(stack, spec, problem):
    stack.write(
        python_service("good")  # checked in the same subprocess, and fine
        + f'[services.api]\nmodule = "{spec}"\ncwd = "{FIXTURES}"\n'
    )
    assert_refused(stack, stack.cli("up"), f"procorch.toml: services.api.module: {problem}")


def test_foreground_refuses_it_too(stack):
    stack.write(f'[services.api]\nmodule = "nope.mod:Cls"\ncwd = "{FIXTURES}"\n')
    result = stack.cli("up", "--foreground", timeout=30)
    problem = "cannot import 'nope.mod': No module named 'nope'"
    assert_refused(stack, result, f"procorch.toml: services.api.module: {problem}")


def test_a_module_that_kills_the_interpreter_is_refused(stack):
    (stack.root / "fatal_import.py").write_text("import os, signal\nos.kill(os.getpid(), 9)\n")
    stack.write('[services.api]\nmodule = "fatal_import:Api"\n')  # the config's directory
    assert_refused(
        stack,
        stack.cli("up"),
        "procorch.toml: services.api.module: importing 'fatal_import' killed the interpreter "
        "(SIGKILL)",
    )


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("jobfuncs:squar", "module 'jobfuncs' has no 'squar' (did you mean 'square'?)"),
        ("jobfuncs:not_callable", "'jobfuncs:not_callable' is not a function"),
        ("nojobs:square", "cannot import 'nojobs': No module named 'nojobs'"),
    ],
)
def test_a_job_function_that_does_not_resolve_is_refused(stack, spec, problem):
    stack.write(
        f"""
        [services.JobWorker]            # the workers import the functions: from here
        module = "procorch.jobs.worker:JobWorker"
        cwd = "{FIXTURES}"

        [jobs.functions]
        good = "jobfuncs:square"
        bad = "{spec}"
        """
    )
    assert_refused(stack, stack.cli("up"), f"procorch.toml: jobs.functions.bad: {problem}")


def test_imports_are_checked_where_the_replicas_run(stack, tmp_path):
    """A module found only through the service's cwd or its env (PYTHONPATH) is fine:
    the check runs as the replica will, not in the CLI's directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "farmod.py").write_text(
        "from procorch.services import Service\n\nclass Far(Service):\n    pass\n"
    )
    stack.write(
        python_service("near")  # cwd = tests/fixtures
        + f'[services.far]\nmodule = "farmod:Far"\nenv = {{ PYTHONPATH = "{elsewhere}" }}\n'
    )
    up = stack.up()
    assert up.returncode == 0
    assert all(s["state"] == "running" for s in stack.status()["services"])


def test_the_error_names_the_config_file_as_given(stack):
    (stack.root / "conf").mkdir()
    path = stack.root / "conf" / "app.toml"
    path.write_text(f'[services.api]\nmodule = "nope.mod:Cls"\ncwd = "{FIXTURES}"\n')
    result = stack.cli("up", "-c", "conf/app.toml")
    assert result.returncode == 2
    assert result.stderr.startswith("procorch: conf/app.toml: services.api.module: ")
    assert not (stack.root / "conf" / ".procorch").exists()


def test_builtin_services_need_no_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert targets(load_config(environ={}, enable_gateway=True), None) == {}
    (tmp_path / "procorch.toml").write_text(
        '[services.api]\nmodule = "procorch.services.users:UserService"\n[jobs]\n'
        '[services.mine]\nmodule = "procorch.services.nope:X"\n'  # under procorch, not built in
    )
    groups = targets(load_config(tmp_path / "procorch.toml", environ={}), tmp_path)
    assert [[t.spec for t in group] for group in groups.values()] == [["procorch.services.nope:X"]]


def test_one_subprocess_per_distinct_cwd_and_env(tmp_path: Path) -> None:
    (tmp_path / "procorch.toml").write_text(
        f"""
        [services.a]
        module = "services:Steady"
        cwd = "{FIXTURES}"
        [services.b]
        module = "services:Echo"
        cwd = "{FIXTURES}"
        [services.c]
        module = "services:Counter"
        cwd = "{FIXTURES}"
        env = {{ X = "1" }}
        """
    )
    groups = targets(load_config(tmp_path / "procorch.toml", environ={}), tmp_path)
    keys = [[t.key for t in group] for group in groups.values()]
    assert keys == [["services.a.module", "services.b.module"], ["services.c.module"]]
    assert os.path.samefile(next(iter(groups))[0], FIXTURES)


def test_a_slow_import_is_let_through_with_a_warning_but_earlier_answers_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from procorch import importcheck

    (tmp_path / "slow.py").write_text("import time\ntime.sleep(30)\n")
    (tmp_path / "procorch.toml").write_text(
        '[services.slow]\nmodule = "slow:Api"\n'
        f'[services.fine]\nmodule = "services:Steady"\ncwd = "{FIXTURES}"\n'
    )
    cfg = load_config(tmp_path / "procorch.toml", environ={})
    monkeypatch.setattr(importcheck, "TIMEOUT", 1.0)
    started = time.monotonic()
    assert importcheck.check_imports(cfg, "procorch.toml", tmp_path) is None
    assert time.monotonic() - started < 10  # the child was not waited for
    warning = capsys.readouterr().err
    assert warning == (
        "procorch: warning: importing 'slow' (services.slow.module) took over 1s; "
        "starting without checking it\n"
    )
    # an answer given before the hang still refuses
    (tmp_path / "procorch.toml").write_text(
        f'[services.bad]\nmodule = "services:Nope"\ncwd = "{tmp_path}"\n'
        f'[services.slow]\nmodule = "slow:Api"\ncwd = "{tmp_path}"\n'
    )
    (tmp_path / "services.py").write_text("")
    cfg = load_config(tmp_path / "procorch.toml", environ={})
    assert importcheck.check_imports(cfg, "procorch.toml", None) == (
        "procorch.toml: services.bad.module: module 'services' has no 'Nope'"
    )
