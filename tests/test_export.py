"""`procorch export systemd|compose`: the files parse, and the unit really runs the stack."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from procorch.cli.export import stop_budget
from procorch.config import ServiceConfig
from tests.conftest import PY, SLEEP_FOREVER, Stack, command_service, python_service
from tests.test_cli import assert_one_line_error

STACK = (
    command_service(
        "db", SLEEP_FOREVER, extra="stop_timeout = 3\n[services.db.health]\ntcp = 5432\n"
    )
    + command_service(
        "web",
        SLEEP_FOREVER,
        replicas=3,
        extra=textwrap.dedent(
            """
            depends_on = ["db", "api"]
            restart = "on-failure"
            stop_signal = "INT"
            env = { GREETING = "hi $USER", PORT = 8000 }
            [services.web.health]
            http = "http://127.0.0.1:8000/health"
            """
        ),
    )
    + python_service("api")
)


def unit_file(stack: Stack, *args: str) -> str:
    result = stack.cli("export", "systemd", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def unit_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if re.match(r"\w+=", line))


# == systemd =========================================================================


def test_the_unit_runs_this_procorch_on_this_config(stack: Stack) -> None:
    stack.write(STACK)
    values = unit_values(unit_file(stack))
    procorch = Path(PY).parent / "procorch"
    assert values["ExecStart"] == (
        f"{procorch} up --foreground -c {stack.config} --run-dir {stack.run_dir}"
    )
    assert values["Type"] == "notify"
    assert values["Restart"] == "on-failure"
    assert values["KillMode"] == "mixed"  # SIGTERM to the daemon alone: it stops in order
    assert values["WorkingDirectory"] == str(stack.root)
    # web (10 s) stops first, then db (3 s) and api (10 s) together, then a margin
    assert values["TimeoutStopSec"] == str(10 + 10 + 5)
    assert values["WantedBy"] == "multi-user.target"


def test_the_stop_budget_follows_the_dependency_levels() -> None:
    services = (
        ServiceConfig(name="a", command=("x",), stop_timeout=2),
        ServiceConfig(name="b", command=("x",), stop_timeout=7),
        ServiceConfig(name="c", command=("x",), stop_timeout=1.5, depends_on=("a",)),
        ServiceConfig(name="d", command=("x",), stop_timeout=1, depends_on=("c", "b")),
    )
    assert stop_budget(services) == 7 + 2 + 1 + 5  # levels {a, b}, {c}, {d}, and a margin


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("folder", ["plain", "a b 9% $X"])
def test_systemd_analyze_verifies_the_unit(tmp_path: Path, folder: str) -> None:
    stack = Stack(tmp_path / folder)
    stack.root.mkdir()
    stack.write(STACK)
    out = tmp_path / "units"
    out.mkdir()
    result = stack.cli("export", "systemd", "--output", str(out))
    assert result.returncode == 0, result.stderr
    (unit,) = out.iterdir()
    assert re.fullmatch(r"procorch-[\w.-]+\.service", unit.name), unit.name
    assert result.stderr == f"procorch: wrote {unit}\n"
    # it prints what it does not like (and exits 0 for much of it): both must be empty
    check = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
    # and the command systemd will run is this procorch, with this config
    argv = shlex.split(unit_values(unit.read_text())["ExecStart"].replace("%%", "%"))
    argv = [arg.replace("$$", "$") for arg in argv]
    assert argv[-4:] == ["-c", str(stack.config), "--run-dir", str(stack.run_dir)]


def test_a_user_unit(stack: Stack) -> None:
    stack.write(STACK)
    values = unit_values(unit_file(stack, "--user"))
    assert values["WantedBy"] == "default.target" and "User" not in values


def test_the_units_command_runs_the_stack_and_tells_systemd(stack: Stack) -> None:
    """What systemd would do: run ExecStart with $NOTIFY_SOCKET, wait for READY=1, later
    send SIGTERM and wait for the exit."""
    stack.write(command_service("api", SLEEP_FOREVER, start_seconds=0.1))
    argv = shlex.split(unit_values(unit_file(stack))["ExecStart"])
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(stack.root / "notify.sock"))
    notify.settimeout(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCORCH_")}
    env["NOTIFY_SOCKET"] = str(stack.root / "notify.sock")
    proc = subprocess.Popen(
        argv, cwd="/", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert notify.recv(100) == b"READY=1"
        assert stack.cli("status").returncode in (0, 3)  # the daemon answers
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(100) == b"STOPPING=1"
        assert proc.wait(timeout=30) == 0  # a clean stop: Restart=on-failure leaves it
    finally:
        proc.kill()
        notify.close()


# == compose =========================================================================


def test_compose_has_one_service_per_command_service(stack: Stack) -> None:
    stack.write(STACK)
    result = stack.cli("export", "compose")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("procorch: not exported: api (Python services")
    assert result.stderr.count("\n") == 1
    compose = yaml.safe_load(result.stdout)
    assert list(compose["services"]) == ["db", "web"]
    db, web = compose["services"]["db"], compose["services"]["web"]
    assert db["command"] == [PY, "-c", SLEEP_FOREVER]
    assert db["ports"] == ["5432:5432"]
    assert db["deploy"] == {"replicas": 1}
    assert (db["restart"], db["stop_signal"], db["stop_grace_period"]) == (
        "always",
        "SIGTERM",
        "3s",
    )
    assert web["deploy"] == {"replicas": 3}
    assert web["ports"] == ["8000"]  # three replicas cannot share a host port
    assert web["depends_on"] == ["db"]  # api is not in the file
    assert web["environment"] == {"GREETING": "hi $$USER", "PORT": "8000"}  # $ as written
    assert (web["restart"], web["stop_signal"]) == ("on-failure", "SIGINT")
    assert db["image"] == web["image"] == "${PROCORCH_IMAGE:-python:3.12-slim}"


def test_compose_names_that_yaml_would_read_as_something_else(stack: Stack) -> None:
    code = "print('yes: no # not a comment')"
    stack.write(
        command_service("on", code) + command_service("null", code) + command_service("0x10", code)
    )
    out = stack.root / "out"
    out.mkdir()
    result = stack.cli("export", "compose", "-o", str(out))
    assert result.returncode == 0 and result.stderr == f"procorch: wrote {out}/compose.yaml\n"
    services = yaml.safe_load((out / "compose.yaml").read_text())["services"]
    assert list(services) == ["on", "null", "0x10"]  # strings, not true, None and 16
    assert services["on"]["command"][-1] == code


def test_export_refusals_are_one_line(stack: Stack) -> None:
    assert_one_line_error(stack.cli("export", "compose"), 2, "without a config file")
    stack.write(python_service("api"))
    assert_one_line_error(stack.cli("export", "compose"), 2, "nothing to export: api")
    assert_one_line_error(
        stack.cli("export", "systemd", "--output", "nowhere"), 2, "nowhere: not a directory"
    )
    assert not (stack.root / "nowhere").exists()


def test_compose_fills_placeholders_and_names_the_env_file(stack: Stack) -> None:
    (stack.root / ".env.web").write_text("SECRET=hunter2-{not-a-placeholder}\nSHARED=file\n")
    code = "print({'a': 1})"  # braces written {{ }} in the file
    stack.write(
        command_service(
            "web",
            code,
            extra=textwrap.dedent(
                """
                base_port = 8100
                env_file = ".env.web"
                env = { PORT = "{port}", NAME = "w{replica}", SHARED = "table" }
                """
            ),
        )
        + command_service(
            "workers",
            "import sys; print(sys.argv)",
            replicas=2,
            extra='env = { WORKER = "w{replica}" }\n',
        )
        + command_service("plain", SLEEP_FOREVER, replicas=2, extra='env = { X = "{{x}}" }\n')
    )
    result = stack.cli("export", "compose")
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr  # the file is named, not inlined
    assert result.stderr == (
        "procorch: not exported: workers (its replicas' commands or environments differ by "
        "{replica} or {port}; compose runs identical replicas)\n"
    )
    services = yaml.safe_load(result.stdout)["services"]
    assert list(services) == ["web", "plain"]
    web, plain = services["web"], services["plain"]
    assert web["command"] == [PY, "-c", code]  # {{ and }} are single braces again
    assert web["env_file"] == [str(stack.root / ".env.web")]
    assert web["environment"] == {"PORT": "8100", "NAME": "w0", "SHARED": "table"}
    assert plain["environment"] == {"X": "{x}"} and plain["deploy"] == {"replicas": 2}
