"""Shell completion, as bash runs it: the installed `procorch` with the completion variables."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import PY, SLEEP_FOREVER, Stack, command_service, free_port, jobs_table
from tests.conftest import python_service as python

PROCORCH = str(Path(PY).parent / "procorch")  # the installed command, as a shell runs it


def complete(stack: Stack, line: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash is offered for the last word of `line` (after a space: a new word)."""
    words = line.split(" ")
    result = subprocess.run(
        [PROCORCH],
        cwd=stack.root,
        env={
            **Stack._env(),
            **(env or {}),
            "_PROCORCH_COMPLETE": "complete_bash",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
        },
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout.split()


def test_service_names_come_from_what_the_stack_runs(stack: Stack) -> None:
    stack.write(python("api", replicas=2) + command_service("web", SLEEP_FOREVER))
    env = {**os.environ, "GATEWAY_PORT": str(free_port())}
    assert stack.cli("up", "--gateway", env=env).returncode == 0  # a Gateway no file names
    names = ["api", "web", "Gateway"]
    for command in ("status", "call"):
        assert complete(stack, f"procorch {command} ") == names, command
    # the gateway runs one process per CPU by default (`workers = "auto"`): so many replicas
    gateways = len(stack.replicas("Gateway"))
    replicas = ["api.0", "api.1", *(f"Gateway.{i}" for i in range(gateways) if gateways > 1)]
    for command in ("logs", "start", "stop", "restart"):  # these also take one replica
        assert complete(stack, f"procorch {command} ") == [*names, *replicas], command
    assert complete(stack, "procorch logs api.") == ["api.0", "api.1"]
    assert complete(stack, "procorch stop G") == ["Gateway", *replicas[2:]]
    assert complete(stack, "procorch restart api w") == ["web"]  # restart takes several
    assert complete(stack, "procorch call api ") == []  # the action: nothing to offer

    daemon = stack.daemon_pid()
    os.kill(daemon, signal.SIGSTOP)  # a daemon that cannot answer: completion never asks it
    try:
        assert complete(stack, "procorch logs w") == ["web"]
    finally:
        os.kill(daemon, signal.SIGCONT)

    assert stack.cli("down").returncode == 0
    assert complete(stack, "procorch status ") == names  # what it ran last


def test_service_names_before_any_up_and_with_a_broken_config(stack: Stack) -> None:
    stack.write(python("api") + command_service("web", SLEEP_FOREVER))
    assert complete(stack, "procorch start ") == ["api", "web"]  # from the config
    other = stack.root / "other.toml"
    other.write_text(f"[procorch]\nrun_dir = '{stack.root}/x'\n[services.solo]\ncommand = 'x'\n")
    assert complete(stack, f"procorch stop -c {other} ") == ["solo"]  # the -c given so far
    stack.config.write_text("[services.api\n")
    assert complete(stack, "procorch start ") == []  # quietly nothing: no error in the line


def test_completing_names_imports_nothing_heavy(stack: Stack) -> None:
    stack.write(python("api"))
    stack.up()
    env = {"PYTHONPROFILEIMPORTTIME": "1", "_PROCORCH_COMPLETE": "complete_bash"}
    result = subprocess.run(
        [PROCORCH],
        cwd=stack.root,
        env={**Stack._env(), **env, "COMP_WORDS": "procorch logs ", "COMP_CWORD": "2"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.stdout.split() == ["api"]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    heavy = {"sqlite3", "procorch.jobs.api", "procorch.services", "procorch.supervisor.daemon"}
    assert not heavy & imported, heavy & imported


def test_job_ids_newest_first_and_only_open_ones_to_wait_for_or_cancel(stack: Stack) -> None:
    stack.write(jobs_table(workers=1), settings="")
    for n in (5, 6, 7):  # no daemon: the jobs wait, pending
        assert stack.cli("job", "submit", str(n)).returncode == 0
    assert stack.cli("job", "cancel", "2").returncode == 0
    assert complete(stack, "procorch job status ") == ["3", "2", "1"]
    assert complete(stack, "procorch job cancel ") == ["3", "1"]
    assert complete(stack, "procorch job wait ") == ["3", "1"]
    assert complete(stack, "procorch job status 3") == ["3"]
    assert complete(stack, "procorch job status 9") == []
