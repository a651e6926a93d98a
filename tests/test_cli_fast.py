"""`status` and `down` without Typer or Rich (`procorch.cli.fast`), and the hand-over to
the Typer app for everything else: what runs which way, and that a user sees the same.
"""

from __future__ import annotations

import json
import os
import time

import psutil
import pytest
from typer.testing import CliRunner

from procorch.cli import fast
from tests.conftest import SLEEP_FOREVER, command_service, python_service

NO_ENV: dict[str, str] = {}


@pytest.mark.parametrize(
    ("argv", "command", "name", "as_json", "config", "run_dir"),
    [
        (["status"], "status", None, False, None, None),
        (["ps", "--json"], "ps", None, True, None, None),
        (["status", "api", "--json"], "status", "api", True, None, None),
        (["-c", "a.toml", "status"], "status", None, False, "a.toml", None),
        (["status", "--config=a.toml", "--run-dir", "rd"], "status", None, False, "a.toml", "rd"),
        (["--run-dir=rd", "down"], "down", None, False, None, "rd"),
    ],
)
def test_the_runs_it_answers(argv, command, name, as_json, config, run_dir):
    call = fast.parse(argv, NO_ENV)
    assert call is not None
    got = (call.command, call.name, call.as_json, call.config, call.run_dir)
    assert got == (command, name, as_json, config, run_dir)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["status", "--help"],
        ["status", "-h"],
        ["status", "--watch"],
        ["status", "-w"],
        ["status", "a", "b"],
        ["status", "--jsn"],
        ["down", "--json"],
        ["down", "api"],
        ["up"],
        ["logs", "status"],
        ["--version"],
        ["status", "-c"],
        ["status", "-c", "--json"],
        ["status", "--config="],
        ["statsu"],
    ],
)
def test_the_runs_it_hands_to_the_app(argv):
    assert fast.parse(argv, NO_ENV) is None


def test_the_environment_names_the_config_and_the_options_win():
    env = {"PROCORCH_CONFIG": "env.toml", "PROCORCH_RUN_DIR": "envrd"}
    call = fast.parse(["status"], env)
    assert (call.config, call.run_dir) == ("env.toml", "envrd")
    call = fast.parse(["status", "-c", "opt.toml"], env)
    assert (call.config, call.run_dir) == ("opt.toml", "envrd")
    assert fast.parse(["status"], {"PROCORCH_CONFIG": ""}).config is None  # empty: unset
    assert fast.parse(["status"], {"_PROCORCH_COMPLETE": "bash_complete"}) is None


def test_it_finds_the_run_directory_as_the_config_does(tmp_path, monkeypatch):
    from procorch.config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    cases = {
        "sub/plain.toml": "[services.a]\ncommand = 'x'\n",
        "sub/moved.toml": "[procorch]\nrun_dir = '../elsewhere'\n[services.a]\ncommand = 'x'\n",
    }
    for path, text in cases.items():
        (tmp_path / path).write_text(text)
        call = fast.parse(["status", "-c", path], NO_ENV)
        expected = load_config(tmp_path / path).settings.run_dir / "control.sock"
        assert fast.socket_of(call) == expected
    call = fast.parse(["status", "--run-dir", "rd"], NO_ENV)
    assert fast.socket_of(call) == tmp_path / "rd" / "control.sock"
    (tmp_path / "bad.toml").write_text("[procorch\n")
    assert fast.socket_of(fast.parse(["status", "-c", "bad.toml"], NO_ENV)) is None


def _imported(result_stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in result_stderr.splitlines()}


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("ps", "api")])
def test_status_imports_neither_typer_nor_rich(stack, args):
    stack.write(python_service("api"))
    stack.up()
    result = stack.cli(*args, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    imported = _imported(result.stderr)
    assert "procorch.cli.fast" in imported
    assert not {"typer", "rich", "click", "procorch.cli.app", "procorch.config"} & imported


def test_status_says_the_same_as_the_typer_command(stack, monkeypatch):
    stack.write(python_service("api", replicas=2) + command_service("idle", SLEEP_FOREVER))
    stack.up()
    fast_json = json.loads(stack.cli("status", "--json").stdout)
    from procorch.cli.app import app

    monkeypatch.chdir(stack.root)
    typer_json = json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)

    def steady(status):
        return [(s["name"], s["replica"], s["state"], s["pid"]) for s in status["services"]]

    assert steady(fast_json) == steady(typer_json)
    assert set(fast_json) == set(typer_json) and fast_json["supervisor"]["pid"] > 0


def test_status_of_an_unknown_service_and_of_no_daemon_are_the_apps_lines(stack):
    stack.write(python_service("api"))
    stack.up()
    unknown = stack.cli("status", "nosuch")
    assert unknown.returncode == 1  # a refused request
    assert unknown.stderr.startswith("procorch: no service named 'nosuch'")
    stack.cli("down")
    gone = stack.cli("status", "--json")
    assert gone.returncode == 1 and "procorch is not running" in gone.stderr
    assert "Traceback" not in gone.stderr + unknown.stderr


def test_a_broken_config_is_reported_by_the_app(stack):
    stack.config.write_text("[procorch\n")
    result = stack.cli("status")
    assert result.returncode == 2
    assert "invalid TOML" in result.stderr and "Traceback" not in result.stderr


def test_down_waits_for_the_slowest_stop_the_daemon_reports(stack):
    """The fast `down` takes its budget from the daemon's reply (the running config's
    slowest stop_timeout), and returns only once every process has gone."""
    slow = "import signal, time\nsignal.signal(signal.SIGTERM, lambda *a: None)\ntime.sleep(1e9)"
    stack.write(command_service("stubborn", slow, start_seconds=0.1, extra="stop_timeout = 1.5\n"))
    stack.up()
    pid = stack.daemon_pid()
    children = psutil.Process(pid).children(recursive=True)
    started = time.monotonic()
    result = stack.cli("down", env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"procorch stopped (pid {pid}) in ")
    assert not {"typer", "rich"} & _imported(result.stderr)
    assert took >= 1.4  # SIGTERM is ignored: the daemon waited out stop_timeout, and so did down
    for proc in [psutil.Process(pid), *children]:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def test_down_with_no_daemon_is_the_apps_line(stack):
    stack.write(python_service("api"))
    result = stack.cli("down")
    assert result.returncode == 0
    assert "procorch is not running" in result.stdout and "nothing to stop" in result.stdout
