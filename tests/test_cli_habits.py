"""The CLI as users of docker compose, supervisorctl and pm2 expect it, and its edges:
init's paths, up on a running daemon, down's return, Ctrl-C, foreground output."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time

import psutil

from tests.conftest import (
    PY,
    SLEEP_FOREVER,
    command_service,
    free_port,
    python_service,
    wait_for,
)
from tests.test_cli import assert_one_line_error

ESCAPE = re.compile(r"\x1b\[")


def test_init_paths(stack):
    missing = stack.root / "no" / "such" / "dir" / "p.toml"
    assert_one_line_error(stack.cli("init", str(missing)), 2, "cannot write", "No such file")
    folder = stack.root / "proj"
    folder.mkdir()
    assert stack.cli("init", str(folder)).returncode == 0  # a folder: its procorch.toml
    assert (folder / "procorch.toml").is_file()
    assert_one_line_error(stack.cli("init", str(folder)), 1, "already exists")
    forced = stack.cli("init", str(folder), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "python3 -m http.server" in (folder / "procorch.toml").read_text()


def test_a_negative_job_number_is_one_line(stack):
    stack.write("[jobs]\nworkers = 1\n")
    for command in (["job", "submit", "-3"], ["submit-job", "4", "-3"]):
        assert_one_line_error(stack.cli(*command), 2, "n must be from 0", "-3")
    listed = json.loads(stack.cli("job", "list", "--json").stdout)
    assert listed["total"] == 0  # all or none: nothing was queued


def test_waiting_without_a_worker_says_so_at_once(stack):
    stack.write("[jobs]\nworkers = 1\n")
    proc = stack.start(
        "job", "submit", "7", "--wait", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stderr.readline() == "job 1 taken\n"
        said = proc.stderr.readline()
        assert "procorch is not running here" in said and "stay queued" in said
        assert proc.poll() is None  # still waiting for a worker
        stack.up()  # a worker comes: the wait ends with the result
        out, _ = proc.communicate(timeout=30)
        assert out == "job 1 done: F(7) mod 1000000007 = 13\n"
        assert proc.returncode == 0
    finally:
        proc.kill()


def test_up_on_a_running_daemon_says_what_differs(stack):
    stack.write(python_service("api"))
    stack.up()
    again = stack.cli("up")
    assert again.returncode == 0 and "already running" in again.stderr
    stack.write(python_service("api", replicas=2) + command_service("extra", SLEEP_FOREVER))
    changed = stack.cli("up")
    assert changed.returncode == 1
    lines = changed.stderr.splitlines()
    assert "already running" in lines[0] and "another config" in lines[0]
    assert "  added: extra" in lines
    assert "  scaled: api (1 -> 2 replicas)" in lines
    assert "procorch up --reload" in lines[-1]
    assert [s["name"] for s in stack.status()["services"]] == ["api"]  # nothing was changed


def test_up_asking_for_the_gateway_or_another_token_says_so_without_the_token(stack):
    stack.write(python_service("api"), settings=f"[gateway]\nport = {free_port()}\n")
    stack.up()
    asked = stack.cli("up", "--gateway")
    assert asked.returncode == 1
    assert "  added: Gateway" in asked.stderr.splitlines()
    assert "  refused: [gateway] enabled" in asked.stderr
    stack.cli("down")
    stack.up("--gateway")
    assert stack.cli("up").returncode == 0  # not asking for the gateway keeps it
    secret = "s3cret-token-0123456789"
    text = stack.config.read_text().replace("[gateway]\n", f'[gateway]\ntoken = "{secret}"\n')
    stack.config.write_text(text)
    other = stack.cli("up")
    assert other.returncode == 1
    assert "  changed: Gateway (gateway.token; " in other.stderr
    assert secret not in other.stderr + other.stdout


def test_up_ends_with_what_to_type_next(stack):
    stack.write(python_service("api"), settings=f"[gateway]\nport = {free_port()}\n")
    plain = stack.up()
    assert "next: procorch status" in plain.stderr
    assert "gateway:" not in plain.stderr
    stack.cli("down")
    with_gateway = stack.up("--gateway")
    assert re.search(r"^gateway: http://127\.0\.0\.1:\d+/$", with_gateway.stderr, re.M)
    assert "\ndashboard: procorch dashboard" in with_gateway.stderr


def test_down_returns_when_the_daemon_is_gone(stack):
    stack.write(python_service("api"))
    stack.up()
    pid = stack.daemon_pid()
    children = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    assert stack.cli("down").returncode == 0
    for gone in [pid, *children]:
        try:
            assert psutil.Process(gone).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            pass


def test_ctrl_c_during_up_leaves_the_daemon_running_and_says_so(stack):
    stack.write(command_service("slow", SLEEP_FOREVER, start_seconds=30))
    proc = stack.start("up", stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    wait_for(lambda: stack.daemon_pid() and stack.replicas("slow")[0]["pid"])
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "keeps running" in err and "procorch down" in err
    assert stack.replicas("slow")[0]["state"] == "starting"  # the daemon carries on


def test_options_before_the_command(stack):
    stack.write(python_service("api"))
    elsewhere = stack.root / "elsewhere"
    up = stack.cli("-c", str(stack.config), "--run-dir", str(elsewhere), "up")
    assert up.returncode == 0, up.stderr
    assert (elsewhere / "procorch.pid").exists() and not stack.run_dir.exists()
    status = stack.cli("--run-dir", str(elsewhere), "ps", "--json")
    assert status.returncode == 0, status.stderr
    assert [s["name"] for s in json.loads(status.stdout)["services"]] == ["api"]
    assert stack.cli("--run-dir", str(elsewhere), "down").returncode == 0


def test_start_and_stop_take_several_names_and_single_replicas(stack):
    stack.write(python_service("api", replicas=2) + python_service("web"))
    stack.up()
    stopped = stack.cli("stop", "api.1", "--json")
    assert stopped.returncode == 0, stopped.stderr
    states = {(s["name"], s["replica"]): s["state"] for s in stack.status()["services"]}
    assert states == {("api", 0): "running", ("api", 1): "stopped", ("web", 0): "running"}
    assert stack.cli("stop", "API", "web").returncode == 0
    assert {s["state"] for s in stack.status()["services"]} == {"stopped"}
    assert stack.cli("start", "api", "web").returncode == 0
    assert {s["state"] for s in stack.status()["services"]} == {"running"}
    for unknown in ("api.2", "api.x", "nope"):
        assert_one_line_error(stack.cli("stop", unknown), 1, f"no service named {unknown!r}")
    assert_one_line_error(stack.cli("restart", "web", "api.7"), 1, "'api.7'")


def test_foreground_output_into_a_file_has_no_colour(stack):
    stack.write(command_service("talker", "print('hello', flush=True); " + SLEEP_FOREVER))
    out_path = stack.root / "out.txt"
    with open(out_path, "w") as out:
        proc = stack.start("up", "--foreground", stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "hello" in out_path.read_text())
            second = stack.cli("up", "--foreground")
            assert second.returncode == 1  # nothing was started: not a success
            assert "already running" in second.stderr
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    text = out_path.read_text()
    assert "talker.0 | hello" in text
    assert not ESCAPE.search(text), text
    # NO_COLOR wins even on a terminal; on one without it the names are coloured
    assert _foreground_through_a_terminal(stack, {"NO_COLOR": "1"}).count("\x1b[3") == 0
    time.sleep(0.2)
    assert "\x1b[3" in _foreground_through_a_terminal(stack, {})


def _foreground_through_a_terminal(stack, extra_env: dict[str, str]) -> str:
    """What `up --foreground` writes to a pseudo-terminal until the first service line."""
    env = {k: v for k, v in stack._env().items() if k != "NO_COLOR"}
    env.update(TERM="xterm", **extra_env)
    main, replica = pty.openpty()
    proc = subprocess.Popen(
        [PY, "-m", "procorch", "up", "--foreground"],
        cwd=stack.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=replica,
        stderr=replica,
    )
    os.close(replica)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"hello" not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(main, 4096)
            except OSError:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        os.close(main)
    return seen.decode(errors="replace")
