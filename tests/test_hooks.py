"""[[hooks]]: validation, the rate limit, a hanging hook that delays nothing, a URL hook."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from procorch.config import EXAMPLE_TOML, HookConfig
from procorch.supervisor.hooks import admitted, describe
from tests.conftest import (
    PY,
    SLEEP_FOREVER,
    Stack,
    command_service,
    epoch,
    events_log,
    load_toml,
    wait_for,
)
from tests.test_cli import assert_one_line_error

# -- pure parts ----------------------------------------------------------------------


def test_rate_limit_admits_max_runs_per_window() -> None:
    recent: tuple[float, ...] = ()
    verdicts = []
    for now in (0.0, 0.1, 0.2, 0.3, 9.9, 10.05, 10.15, 10.19):
        ok, recent = admitted(recent, now, max_runs=3, window=10.0)
        verdicts.append(ok)
    # three in the first window; the 4th and 5th refused; once 0.0 and 0.1 are over 10 s
    # old, two more fit, then the window is full again
    assert verdicts == [True, True, True, False, False, True, True, False]
    assert recent == (0.2, 10.05, 10.15)  # refused runs are not remembered


def test_a_hook_is_described_without_its_secrets() -> None:
    url = HookConfig(on=("fatal",), url="https://bob:s3cret@hooks.example.com:8443/T0/B0/XyZ?k=v")
    assert describe(1, url) == "hooks[1] (url https://hooks.example.com:8443/…)"
    command = HookConfig(on=("fatal",), command=("/usr/local/bin/page-me", "--now"))
    assert describe(0, command) == "hooks[0] (command page-me)"


def test_example_config_documents_every_hook_key() -> None:
    for key in HookConfig.__dataclass_fields__:
        assert f"#   {key} = " in EXAMPLE_TOML or f"# {key} = " in EXAMPLE_TOML, key


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hook", "problem"),
    [
        ('on = ["fatl"]\ncommand = ["true"]', "hooks[0].on: unknown event 'fatl' (did you mean"),
        ('on = ["fatal"]', "hooks[0]: missing `command` or `url`"),
        ('on = ["fatal"]\ncommand = ["true"]\nurl = "http://x/"', "give either `command` or"),
        ('command = ["true"]', "hooks[0]: missing `on`"),
        ('on = []\ncommand = ["true"]', "hooks[0].on: expected a non-empty list"),
        ('on = ["fatal"]\nurl = "ftp://x/"', "hooks[0].url: expected an http:// or https://"),
        ('on = ["fatal"]\ncommand = ["true"]\nmax_runs = 0', "hooks[0].max_runs: expected an"),
        ('on = ["fatal"]\ncommand = ["true"]\nwhen = 1', "hooks[0]: unknown key 'when'"),
    ],
)
def test_bad_hooks_are_one_line_errors(stack: Stack, hook: str, problem: str) -> None:
    stack.write(command_service("api", SLEEP_FOREVER) + "\n[[hooks]]\n" + hook + "\n")
    assert_one_line_error(stack.cli("up"), 2, problem)
    assert not stack.run_dir.exists()  # nothing was started


def test_a_bad_url_with_a_password_is_not_echoed(stack: Stack) -> None:
    stack.write(
        command_service("api", SLEEP_FOREVER)
        + '\n[[hooks]]\non = ["fatal"]\nurl = "gopher://me:hunter2hunter2@example.com/"\n'
    )
    result = stack.cli("up")
    assert_one_line_error(result, 2, "hooks[0].url", "me:***@example.com")
    assert "hunter2" not in result.stdout + result.stderr


# -- a hanging hook delays nothing -------------------------------------------------------

# Appends the event it got (and its own pid) to a file, then hangs until killed.
HANGING_HOOK = textwrap.dedent(
    """
    import json, os, sys, time
    event = json.loads(sys.stdin.readline())
    event["hook_pid"] = os.getpid()
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(event) + "\\n")
    time.sleep(1e6)
    """
)


def reported(stack: Stack, kind: str) -> list[str]:
    """The details of the `kind` events so far."""
    return [e["detail"] for e in events_log(stack.run_dir) if e["event"] == kind]


REPLICAS = 6
MAX_RUNS = 2
# A correctness bound, not a timing target (`python bench/supervisors --parts hooks`
# measures ~1-2 ms): a loop that waited for the hook even once would take its 1 s
# timeout, or forever. Room below that
# for six hook interpreters starting at once on a loaded machine.
GENEROUS = 0.8


def test_a_hanging_hook_never_delays_a_restart_and_is_rate_limited(stack: Stack) -> None:
    runs = stack.root / "runs.jsonl"
    hook = f"""
        [[hooks]]
        on = ["exited"]
        command = [{json.dumps(PY)}, "-c", {json.dumps(HANGING_HOOK)}, "{runs}"]
        timeout = 1.0
        max_runs = {MAX_RUNS}
        window = 60.0
        """
    stack.write(command_service("api", SLEEP_FOREVER, replicas=REPLICAS, start_seconds=0.1) + hook)
    stack.up()
    time.sleep(1.1)  # past the crash-loop window: each replacement is started at once
    latencies = []
    killed = []
    for replica in stack.replicas("api"):
        old = replica["pid"]
        at = time.time()
        os.kill(old, signal.SIGKILL)

        def replaced(
            index: int = replica["replica"], old: int = old, at: float = at
        ) -> dict[str, Any] | None:
            return next(
                (
                    e
                    for e in events_log(stack.run_dir)
                    if e["event"] == "spawned"
                    and e.get("replica") == index
                    and e["pid"] != old
                    and epoch(e["time"]) >= at - 0.001
                ),
                None,
            )

        spawned = wait_for(replaced, timeout=10, interval=0.005)
        # the stamp is cut to the millisecond: the spawn was at most 1 ms after it
        latencies.append(epoch(spawned["time"]) + 0.001 - at)
        killed.append(old)
    assert max(latencies) < GENEROUS, latencies

    # Two runs at most in the window: the first hangs until its timeout kills it, the
    # second then starts (and hangs too); the other four are dropped and reported.
    def hook_runs() -> list[dict[str, Any]]:
        return [json.loads(line) for line in runs.read_text().splitlines()] if runs.exists() else []

    wait_for(lambda: len(hook_runs()) == MAX_RUNS, timeout=10)
    first, second = hook_runs()
    assert (first["event"], first["service"], first["pid"]) == ("exited", "api", killed[0])
    assert second["pid"] == killed[1]
    # the first hung past its timeout: its process group is gone, killed, and reaped
    wait_for(lambda: not psutil.pid_exists(first["hook_pid"]), timeout=5)

    def dropped() -> int:
        details = reported(stack, "hook-dropped")
        return sum(int(detail.split(": ")[1].split()[0]) for detail in details)

    wait_for(lambda: dropped() == REPLICAS - MAX_RUNS, timeout=5)
    assert all(
        d.startswith("hooks[0] (command ") and d.endswith("(at most 2 per 60s)")
        for d in reported(stack, "hook-dropped")
    )
    wait_for(lambda: reported(stack, "hook-failed"), timeout=5)
    assert "killed after 1s" in reported(stack, "hook-failed")[0]
    time.sleep(0.5)  # nothing more runs: the limit holds whatever comes later
    assert len(hook_runs()) == MAX_RUNS
    assert all(r["state"] == "running" for r in stack.replicas("api"))
    # `down` with a hook still hanging: it goes with the stack, and `down` does not wait
    started = time.monotonic()
    assert stack.cli("down").returncode == 0
    assert time.monotonic() - started < 5
    assert stack.leftovers() == []


# -- a URL hook --------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on a free loopback port that records what is POSTed to it."""

    def __init__(self, status: int = 204) -> None:
        received: list[tuple[str, dict[str, str], bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    servers: list[Receiver] = []

    def start(status: int = 204) -> Receiver:
        servers.append(Receiver(status))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def everything_written(stack: Stack) -> str:
    """Every file in the run directory, and what `events` shows."""
    texts = [
        p.read_text(errors="replace")
        for p in stack.run_dir.rglob("*")
        # config.json is the config itself, for the daemon and services: owner-only
        if p.is_file() and p.name != "config.json"
    ]
    return "\n".join(texts) + stack.cli("events", "-n", "1000").stdout


def test_a_url_hook_posts_the_event_and_keeps_its_secrets(stack: Stack, receiver: Any) -> None:
    good, bad = receiver(), receiver(500)
    stack.write(
        command_service("api", SLEEP_FOREVER, start_seconds=0.1)
        + f"""
        [[hooks]]
        on = ["running", "exited"]
        url = "http://alice:pa%40ss-w0rd@127.0.0.1:{good.port}/T123/secret-path"

        [[hooks]]
        on = ["running"]
        url = "http://127.0.0.1:{bad.port}/another-secret"
        """
    )
    stack.up()
    wait_for(lambda: good.received, timeout=10)
    path, headers, body = good.received[0]
    event = json.loads(body)
    assert path == "/T123/secret-path"
    assert (event["event"], event["service"], event["replica"]) == ("running", "api", 0)
    assert event["pid"] == stack.pid_of("api")
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pa@ss-w0rd").decode()

    os.kill(event["pid"], signal.SIGKILL)
    wait_for(lambda: any(json.loads(b)["event"] == "exited" for _, _, b in good.received))

    # the one answering 500 is reported as failed, named without its path
    failed = wait_for(lambda: reported(stack, "hook-failed"), timeout=10)
    named = re.escape(f"hooks[1] (url http://127.0.0.1:{bad.port}/…)")
    assert re.fullmatch(rf"{named}: \d failed \(last: HTTP 500\)", failed[0]), failed
    written = everything_written(stack)
    for secret in ("pa%40ss", "pa@ss", "w0rd", "secret-path", "another-secret", "T123"):
        assert secret not in written, secret


def test_up_on_a_running_stack_names_a_changed_hook(stack: Stack) -> None:
    service = command_service("api", SLEEP_FOREVER, start_seconds=0.1)
    hook = '\n[[hooks]]\non = ["fatal"]\ncommand = ["true"]\n'
    stack.write(service + hook)
    stack.up()
    assert stack.cli("up").returncode == 0  # the same config: nothing to say
    stack.write(service + hook.replace("fatal", "unhealthy") + hook)
    result = stack.cli("up")
    assert result.returncode == 1
    assert "  refused: [[hooks]] hooks[0], hooks[1] (" in result.stderr  # not live: down/up


def test_hooks_reach_the_daemon_as_written(tmp_path: Path) -> None:
    from procorch.config import Config

    config = load_toml(
        tmp_path,
        '[services.api]\ncommand = "sleep 1"\n'
        '[[hooks]]\non = ["fatal", "exited", "fatal"]\ncommand = "page-me --now"\ntimeout = 2\n'
        '[[hooks]]\non = ["running"]\nurl = "https://h.example.com/x"\nmax_runs = 3\nwindow = 5\n',
    )
    assert config.hooks == (
        HookConfig(on=("fatal", "exited"), command=("page-me", "--now"), timeout=2.0),
        HookConfig(on=("running",), url="https://h.example.com/x", max_runs=3, window=5.0),
    )
    assert Config.from_json(config.to_json()) == config


def test_a_hook_that_cannot_run_is_reported(stack: Stack) -> None:
    stack.write(
        command_service("api", SLEEP_FOREVER, start_seconds=0.1)
        + '\n[[hooks]]\non = ["running"]\ncommand = ["/no/such/hook"]\n'
    )
    stack.up()

    assert wait_for(lambda: reported(stack, "hook-failed")) == [
        "hooks[0] (command hook): 1 failed (last: cannot execute /no/such/hook: "
        "No such file or directory)"
    ]
    assert stack.status()["services"][0]["state"] == "running"
