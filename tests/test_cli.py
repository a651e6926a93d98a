"""The CLI's user-facing behaviour: config errors, commands, logs, events, foreground mode."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import psutil
import pytest

from tests.conftest import PY, SLEEP_FOREVER, command_service, python_service, wait_for


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    ("toml", "needles"),
    [
        ("[services.a\ncommand = 'x'\n", ["procorch.toml", "invalid TOML"]),
        (
            "[services.a]\ncommand = 'sleep 1'\nreplica = 2\n",
            ["services.a", "'replica'", "replicas"],
        ),
        ("[services.a]\ncommand = 'sleep 1'\nreplicas = 'two'\n", ["services.a.replicas", "'two'"]),
        ("[services.a]\nreplicas = 1\n", ["services.a", "command", "module"]),
        (
            "[services.a]\ncommand = 'x'\ndepends_on = ['b']\n"
            "[services.b]\ncommand = 'x'\ndepends_on = ['a']\n",
            ["depends_on", "cycle"],
        ),
        ("[procorch]\ncheck_interval = -1\n", ["procorch.check_interval"]),
        ("[nonsense]\n", ["'nonsense'"]),
    ],
    ids=[
        "syntax",
        "unknown-key",
        "wrong-type",
        "missing-command",
        "cycle",
        "range",
        "unknown-table",
    ],
)
def test_config_errors_refused_before_anything_starts(stack, toml, needles):
    stack.config.write_text(toml)
    for command in (["up"], ["status"], ["down"]):
        assert_one_line_error(stack.cli(*command), 2, *needles)
    assert not stack.run_dir.exists()  # nothing was started, nothing was written


def test_bad_environment_override_is_a_config_error(stack):
    stack.write(python_service("api"))
    result = stack.cli("up", env={**os.environ, "MAX_RESTART_ATTEMPTS": "many"})
    assert_one_line_error(result, 2, "MAX_RESTART_ATTEMPTS", "'many'")


def test_commands_without_daemon_say_so(stack):
    stack.write(python_service("api"))
    for command in (["status"], ["restart"], ["stop", "api"], ["start", "api"]):
        assert_one_line_error(stack.cli(*command), 1, "not running")
    # `down` on a stopped stack has nothing left to do, as `docker compose down`: exit 0
    down = stack.cli("down")
    assert down.returncode == 0, down.stderr
    assert "not running" in down.stdout and "nothing to stop" in down.stdout


def test_unusable_run_directories(stack):
    stack.write(python_service("api"))
    (stack.root / "afile").write_text("")
    assert_one_line_error(stack.cli("up", "--run-dir", "afile"), 1, "cannot use run directory")
    deep = stack.root / ("d" * 120)
    for command in ("up", "status", "down"):
        result = stack.cli(command, "--run-dir", str(deep))
        assert_one_line_error(result, 2, "--run-dir", "too deep for its control socket")
    assert not deep.exists()


def test_reading_commands_before_any_up(stack):
    stack.write(python_service("api"))
    for command in (["logs"], ["events"], ["logs", "api", "-f"]):
        assert_one_line_error(stack.cli(*command), 1, "no run directory", "procorch up")


def test_unknown_service_name(stack):
    stack.write(python_service("api"))
    stack.up()
    for command in (["status", "nope"], ["restart", "nope"], ["stop", "nope"], ["logs", "nope"]):
        assert_one_line_error(stack.cli(*command), 1, "no service named 'nope'", "api")


def test_stop_and_start_one_service(stack):
    stack.write(python_service("api") + command_service("sleeper", SLEEP_FOREVER))
    stack.up()
    (before,) = stack.replicas("sleeper")
    stopped = stack.cli("stop", "SLEEPER", "--json")
    assert stopped.returncode == 0
    assert json.loads(stopped.stdout)["services"][0]["state"] == "stopped"
    assert not psutil.pid_exists(before["pid"])
    assert stack.cli("status").returncode == 3  # not everything is running
    (api,) = stack.replicas("api")
    assert api["state"] == "running"  # the others are untouched

    started = stack.cli("start", "sleeper", "--json")
    assert started.returncode == 0
    (after,) = json.loads(started.stdout)["services"]
    assert after["state"] == "running" and after["pid"] != before["pid"]
    assert stack.cli("status", "SLEEPER").returncode == 0


def test_stop_timeout_ends_in_sigkill_of_the_group(stack):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1e6)"
    stack.write(command_service("stubborn", stubborn, extra="stop_timeout = 0.5\n"))
    stack.up()
    (before,) = stack.replicas("stubborn")
    started = time.monotonic()
    assert stack.cli("stop", "stubborn").returncode == 0
    assert 0.5 <= time.monotonic() - started < 5
    assert not psutil.pid_exists(before["pid"])
    timeouts = [e for e in stack.events() if e["event"] == "stop-timeout"]
    assert timeouts and timeouts[0]["pid"] == before["pid"]


def test_logs_follow_prints_new_output(stack):
    code = "import time\nfor i in range(1000):\n    print(f'tick {i}', flush=True); time.sleep(0.1)"
    stack.write(command_service("ticker", code))
    stack.up()
    follower = stack.start("logs", "ticker", "-f", "-n", "0", stdout=subprocess.PIPE)
    try:
        line = follower.stdout.readline()  # only output written after it started
        assert line.startswith("tick ")
        first = int(line.split()[1])
        assert int(follower.stdout.readline().split()[1]) == first + 1
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=10)


def test_restart_all_gives_new_pids(stack):
    stack.write(python_service("api", replicas=2))
    stack.up()
    before = {s["pid"] for s in stack.status()["services"]}
    result = stack.cli("restart", "--json")
    assert result.returncode == 0
    after = {s["pid"] for s in json.loads(result.stdout)["services"]}
    assert len(after) == 2 and not (before & after)


def test_logs_capture_stdout_and_stderr(stack):
    code = "import sys, time; print('to stdout', flush=True); print('to stderr', file=sys.stderr, flush=True); time.sleep(1e6)"  # noqa: E501
    stack.write(command_service("talker", code, replicas=2))
    stack.up()
    wait_for(lambda: "to stderr" in stack.cli("logs", "talker").stdout, timeout=5)
    both = stack.cli("logs", "talker", "-n", "5").stdout
    assert "talker.0 | to stdout" in both and "talker.1 | to stderr" in both
    assert (stack.run_dir / "logs" / "talker.0.log").read_text().count("to stdout") == 1
    assert stack.cli("logs", "talker", "-n", "0").stdout == ""


def test_logs_rotate_by_size(stack):
    code = "import time\nfor i in range(3000): print('x' * 99)\ntime.sleep(1e6)"
    stack.write(
        command_service("chatty", code), settings="log_max_bytes = 65536\nlog_backups = 2\n"
    )
    stack.up()
    log = stack.run_dir / "logs" / "chatty.0.log"
    wait_for(lambda: log.with_name("chatty.0.log.2").exists(), timeout=10)
    assert not log.with_name("chatty.0.log.3").exists()
    for path in (log, log.with_name("chatty.0.log.1"), log.with_name("chatty.0.log.2")):
        assert path.stat().st_size <= 65536


def test_events_log_records_the_story(stack):
    stack.write(python_service("api"))
    stack.up()
    text = stack.cli("events").stdout
    assert "daemon-start" in text and "api.0" in text and "running" in text


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("/no/such/program", "No such file"),
        ("no-such-program-in-path", "in PATH"),
        ("./procorch.toml", "Permission denied"),
    ],
)
def test_cannot_spawn_is_fatal_at_once_with_reason(stack, command, reason):
    stack.write(f'[services.ghost]\ncommand = ["{command}"]\ncwd = "{stack.root}"\n')
    result = stack.cli("up")
    assert result.returncode == 3
    assert "ghost.0 is FATAL" in result.stderr
    assert reason in result.stderr
    (ghost,) = stack.replicas("ghost")
    assert ghost["state"] == "fatal"
    spawned = [e for e in stack.events() if e["event"] == "spawned"]
    assert spawned == []  # refused before any process existed, not a crash loop


def test_tcp_health_check_gates_running_and_restarts_when_it_fails(stack):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # listens after 0.5 s, stops listening 1 s later but stays alive: only the probe can tell
    server = (
        "import socket, time\n"
        "time.sleep(0.5)\n"
        f"s = socket.create_server(('127.0.0.1', {port}))\n"
        "time.sleep(1.0)\n"
        "s.close()\n"
        "time.sleep(1e6)\n"
    )
    stack.write(
        command_service(
            "web", server, extra=f"health = {{ tcp = {port} }}\nheartbeat_timeout = 1.0\n"
        )
    )
    started = time.monotonic()
    stack.up()
    assert time.monotonic() - started >= 0.5  # running only once the port answers
    (web,) = stack.replicas("web")
    assert web["state"] == "running"
    wait_for(lambda: stack.replicas("web")[0]["restarts"] == 1, timeout=10)
    assert not psutil.pid_exists(web["pid"])
    unhealthy = [e for e in stack.events() if e["event"] == "unhealthy"]
    assert unhealthy and "probe failed" in unhealthy[0]["detail"]


def test_foreground_prefixes_output_and_ctrl_c_stops(stack):
    stack.write(
        command_service("talker", "import time; print('hello', flush=True); time.sleep(1e6)")
    )
    proc = stack.start("up", "--foreground", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "hello" in line:
                break
        assert any("talker.0 |" in line and "hello" in line for line in lines), lines
        child = stack.replicas("talker")[0]["pid"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert not psutil.pid_exists(child)
    finally:
        proc.kill()


def test_init_writes_a_valid_example(stack):
    result = stack.cli("init")
    assert result.returncode == 0
    assert stack.config.exists()
    assert stack.cli("init").returncode == 1  # refuses to overwrite
    assert "already exists" in stack.cli("init").stderr
    assert stack.cli("init", "--force").returncode == 0


def test_http_health_check(stack):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stack.write(
        f"""
        [services.web]
        command = [{json.dumps(PY)}, "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
        cwd = "{stack.root}"
        health = {{ http = "http://127.0.0.1:{port}/" }}
        """
    )
    stack.up()
    (web,) = stack.replicas("web")
    assert web["state"] == "running"
    assert "GET / HTTP" in (stack.run_dir / "logs" / "web.0.log").read_text()  # it was probed


def test_status_stays_light(stack):
    """`status` imports neither the services, nor flask, nor redis, nor the daemon."""
    stack.write(python_service("api"))
    stack.up()
    result = stack.cli("status", "--json", env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "procorch.cli" in imported
    heavy = {"flask", "redis", "procorch.services", "procorch.supervisor.daemon", "psutil"}
    assert not heavy & imported


def test_status_into_a_closed_pipe_has_no_traceback(stack):
    stack.write(python_service("api"))
    stack.up()
    proc = stack.start("status", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read()
    proc.wait(timeout=30)
    assert "Traceback" not in err


def test_version():
    result = subprocess.run([PY, "-m", "procorch", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("procorch ")


def test_each_command_word_builds_its_own_group():
    """`procorch.cli.GROUPS` names exactly the commands each module registers, so a run
    that builds only the group of its command still finds it."""
    import importlib

    import typer

    from procorch.cli.app import GROUPS, groups_for

    for group, words in GROUPS.items():
        app = typer.Typer()
        importlib.import_module(f"procorch.cli.{group}").register(app)
        names = [c.name or c.callback.__name__ for c in app.registered_commands]
        names += [g.name for g in app.registered_groups]
        assert sorted(names) == sorted(words), group
        for word in words:
            assert groups_for(["procorch", "-c", "x.toml", word, "--json"]) == [group]
    everything = list(GROUPS)
    for argv in (["procorch"], ["procorch", "--help"], ["procorch", "stauts"]):
        assert groups_for(argv) == everything
