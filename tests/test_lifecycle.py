"""The daemon's life cycle, through the real CLI: up, status, restarts, health kills, down."""

from __future__ import annotations

import json
import os
import signal
import stat
import textwrap
import time

import psutil
import pytest

from procorch.supervisor.logs import split_stamp
from tests.conftest import (
    FIXTURES,
    PY,
    SLEEP_FOREVER,
    command_service,
    python_service,
    wait_for,
)


def test_up_status_down(stack):
    stack.write(python_service("api", replicas=2) + command_service("sleeper", SLEEP_FOREVER))
    up = stack.up()
    assert "running" in up.stdout

    status = stack.status()
    assert status["supervisor"]["state"] == "running"
    assert status["supervisor"]["run_dir"] == str(stack.run_dir)
    services = status["services"]
    assert [(s["name"], s["replica"]) for s in services] == [("api", 0), ("api", 1), ("sleeper", 0)]
    for s in services:
        assert s["state"] == "running"
        assert psutil.pid_exists(s["pid"])
        assert s["restarts"] == 0
        assert set(s) >= {
            "uptime",
            "cpu_percent",
            "rss_bytes",
            "heartbeat_age",
            "requests",
            "errors",
        }
    assert services[0]["heartbeat_age"] is not None and services[0]["heartbeat_age"] < 5
    assert services[2]["heartbeat_age"] is None  # commands do not heartbeat
    assert stack.cli("status").returncode == 0

    pids = [s["pid"] for s in services]
    down = stack.cli("down")
    assert down.returncode == 0, down.stderr
    assert not any(psutil.pid_exists(p) for p in pids)
    assert stack.leftovers() == []
    assert not (stack.run_dir / "control.sock").exists()

    after = stack.cli("status")
    assert after.returncode == 1
    assert after.stderr.strip().startswith("procorch: procorch is not running")
    assert "Traceback" not in after.stderr


def test_shared_statistics_show_requests_per_replica(stack):
    stack.write(python_service("counter", cls="Counter", replicas=2))
    stack.up()
    first = {s["replica"]: s["requests"] for s in stack.replicas("counter")}
    time.sleep(0.5)
    later = {s["replica"]: s["requests"] for s in stack.replicas("counter")}
    for replica in (0, 1):  # each replica writes its own slot; both move, independently
        assert later[replica] > first[replica] > 0
    assert all(s["errors"] == 0 for s in stack.replicas("counter"))
    assert "requests" in stack.cli("status").stdout


def test_cpu_and_memory_are_measured(stack):
    stack.write(
        command_service("busy", "while True: pass", start_seconds=0.1)
        + command_service("idle", SLEEP_FOREVER, start_seconds=0.1)
    )
    stack.up()
    time.sleep(1.0)  # a few checks (every 0.2 s here)
    (busy,) = stack.replicas("busy")
    (idle,) = stack.replicas("idle")
    assert busy["cpu_percent"] > 50
    assert idle["cpu_percent"] < 5
    assert 1_000_000 < idle["rss_bytes"] < 200_000_000  # a Python interpreter, measured


def test_state_records_each_process_create_time_as_psutil_reads_it(stack):
    # the daemon reads /proc/PID/stat itself; the identity it records is psutil's
    stack.write(
        command_service("idle", SLEEP_FOREVER, replicas=2, start_seconds=0.1)
        + command_service("other", SLEEP_FOREVER, start_seconds=0.1)
    )
    stack.up()
    time.sleep(0.5)  # sampled at a check (every 0.2 s here)
    assert stack.cli("restart", "other").returncode == 0  # a change: state.json is rewritten

    def recorded():
        entries = json.loads((stack.run_dir / "state.json").read_text())["processes"]
        idle = [e for e in entries if e["service"] == "idle"]
        return idle if all(e["create_time"] for e in idle) else None

    for entry in wait_for(recorded, timeout=5):
        assert entry["create_time"] == pytest.approx(psutil.Process(entry["pid"]).create_time())


def test_run_dir_is_owner_only(stack):
    stack.write(python_service("api"))
    stack.up()
    assert stat.S_IMODE(os.stat(stack.run_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(stack.run_dir / "control.sock").st_mode) == 0o600
    state = json.loads((stack.run_dir / "state.json").read_text())
    assert state["pid"] == stack.daemon_pid()


def test_kill_9_restarts_with_new_pid(stack):
    stack.write(python_service("api") + command_service("sleeper", SLEEP_FOREVER))
    stack.up()
    for name in ("api", "sleeper"):
        (before,) = stack.replicas(name)
        os.kill(before["pid"], signal.SIGKILL)

        def replaced(name=name, before=before):
            (now,) = stack.replicas(name)
            return now if now["state"] == "running" and now["pid"] != before["pid"] else None

        after = wait_for(replaced, timeout=5)
        assert after["restarts"] == 1
        assert psutil.pid_exists(after["pid"])
    kinds = [(e.get("service"), e["event"]) for e in stack.events()]
    assert ("api", "exited") in kinds and ("sleeper", "exited") in kinds


def test_crash_loop_ends_fatal_and_restart_clears_it(stack):
    stack.write(
        command_service("crasher", "import sys; print('boom'); sys.exit(3)")
        + command_service("fine", SLEEP_FOREVER),
        settings="max_restarts = 3\nrestart_window = 60\n",
    )
    up = stack.cli("up")
    assert up.returncode == 3, up.stdout + up.stderr
    assert "crasher.0 is FATAL: exit status 3" in up.stderr
    assert "boom" in up.stderr  # its last log lines are shown

    (crasher,) = stack.replicas("crasher")
    assert crasher["state"] == "fatal"
    assert crasher["pid"] is None
    (fine,) = stack.replicas("fine")
    assert fine["state"] == "running"
    spawned = [
        e for e in stack.events() if e.get("service") == "crasher" and e["event"] == "spawned"
    ]
    assert len(spawned) == 4  # the first start and max_restarts restarts
    assert any(e["event"] == "fatal" for e in stack.events())
    assert stack.cli("status").returncode == 3

    # `restart` clears FATAL and tries again (this one crashes again, so it ends FATAL again)
    again = stack.cli("restart", "CRASHER")  # names are case-insensitive
    assert again.returncode == 3
    spawned = [
        e for e in stack.events() if e.get("service") == "crasher" and e["event"] == "spawned"
    ]
    assert len(spawned) == 8


def test_first_restart_is_immediate_then_backs_off(stack):
    stack.write(
        command_service(
            "crasher", "import time; time.sleep(0.4); raise SystemExit(1)", start_seconds=0.1
        ),
        settings="max_restarts = 10\nbackoff_max = 0.4\n",
    )
    stack.up()
    wait_for(lambda: len([e for e in stack.events() if e["event"] == "backoff"]) >= 3, timeout=15)
    delays = [e["detail"] for e in stack.events() if e["event"] == "backoff"]
    assert delays[:3] == ["restart in 0.10s", "restart in 0.20s", "restart in 0.40s"]
    # the first exit was followed by a spawn with no backoff event in between
    kinds = [e["event"] for e in stack.events() if e.get("service") == "crasher"]
    first_exit = kinds.index("exited")
    assert kinds[first_exit + 1] == "spawned"


def test_crash_after_a_stable_run_restarts_at_once_every_time(stack):
    stack.write(command_service("sleeper", SLEEP_FOREVER, start_seconds=0.1))
    stack.up()
    for restarts in (1, 2, 3):
        time.sleep(1.2)  # past the stable period: each kill is a fresh crash, not a loop
        (before,) = stack.replicas("sleeper")
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(lambda n=restarts: stack.replicas("sleeper")[0]["restarts"] == n, timeout=5)
    assert not [e for e in stack.events() if e["event"] == "backoff"]


def test_sigstopped_service_is_restarted_after_heartbeat_timeout(stack):
    stack.write(python_service("api", extra="heartbeat_timeout = 1.0\n"))
    stack.up()
    (before,) = stack.replicas("api")
    os.kill(before["pid"], signal.SIGSTOP)

    def replaced():
        (now,) = stack.replicas("api")
        return now if now["state"] == "running" and now["pid"] != before["pid"] else None

    after = wait_for(replaced, timeout=10)
    assert after["restarts"] == 1
    assert (
        not psutil.pid_exists(before["pid"]) or psutil.Process(before["pid"]).status() == "zombie"
    )
    unhealthy = [e for e in stack.events() if e["event"] == "unhealthy"]
    assert unhealthy and "no heartbeat" in unhealthy[0]["detail"]


def test_down_leaves_no_process_grandchildren_included(stack):
    marker = f"procorch-test-{os.getpid()}-{id(stack)}"
    stack.write(
        f"""
        [services.forker]
        command = [{json.dumps(PY)}, "{FIXTURES / "forker.py"}", "{marker}"]
        start_seconds = 0.3
        """
    )
    stack.up()
    daemon = psutil.Process(stack.daemon_pid())

    def marked():
        found = []
        for p in psutil.process_iter(["cmdline"]):
            if marker in (p.info["cmdline"] or []):
                found.append(p)
        return found

    tree = wait_for(lambda: len(marked()) >= 3 and marked(), timeout=5)  # forker + 2 sleepers
    assert all(p.pid in {c.pid for c in daemon.children(recursive=True)} for p in tree)
    assert stack.cli("down").returncode == 0
    assert marked() == []
    wait_for(lambda: not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE)


def test_kill_descendants_ends_a_whole_escaped_tree_and_reaps_it(tmp_path):
    # what a service leaves at shutdown: a process in its own session, re-parented to
    # the daemon (a subreaper), with a child and a grandchild of its own
    script = tmp_path / "tree.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, subprocess, sys, time
            from procorch.supervisor.lifeline import become_subreaper
            from procorch.supervisor.reclaim import kill_descendants

            become_subreaper()
            nest = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(1e6)"
            sleep = [sys.executable, "-c", {SLEEP_FOREVER!r}]
            middle = [sys.executable, "-c", nest, sys.executable, "-c", nest, *sleep]
            launcher = subprocess.Popen([sys.executable, "-c", nest, *middle])
            time.sleep(1.5)  # the tree is up: launcher > middle > nest > sleep
            launcher.kill()
            launcher.wait()  # its child is re-parented to us
            time.sleep(0.2)
            children = f"/proc/{{os.getpid()}}/task/{{os.getpid()}}/children"
            before = open(children).read().split()
            started = time.monotonic()
            kill_descendants()
            took = time.monotonic() - started
            after = open(children).read().split()
            print(len(before), len(after), round(took, 3))
            """
        )
    )
    import subprocess

    out = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    adopted, left, took = out.stdout.split()
    assert int(adopted) == 1  # the middle process, adopted; its descendants are deeper
    assert int(left) == 0  # every one killed, and ours reaped: not even a zombie is left
    assert float(took) < 1.0  # without waiting out the grace period


def test_second_up_starts_nothing_twice(stack):
    stack.write(python_service("api", replicas=2))
    stack.up()
    first = stack.status()
    again = stack.cli("up")
    assert again.returncode == 0
    assert "already running" in again.stderr
    second = stack.status()
    assert second["supervisor"]["pid"] == first["supervisor"]["pid"]
    assert [s["pid"] for s in second["services"]] == [s["pid"] for s in first["services"]]
    assert len(stack.leftovers()) == 2

    # a second daemon started by hand on the same run directory refuses to run
    import subprocess

    from procorch.config import load_config

    direct = subprocess.run(
        [PY, "-m", "procorch.supervisor"],
        input=load_config(stack.config).to_json(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert direct.returncode == 3
    assert direct.stdout.strip() == "error: already running"


def test_concurrent_ups_start_one_daemon(stack):
    import subprocess

    stack.write(python_service("api", replicas=2))
    racers = [
        stack.start("up", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    results = [(r.wait(timeout=60), r.stdout.read(), r.stderr.read()) for r in racers]
    assert all(code == 0 for code, _, _ in results), results
    daemons = {json.loads(out)["supervisor"]["pid"] for _, out, _ in results}
    assert len(daemons) == 1
    wait_for(lambda: len(stack.leftovers()) == 2, timeout=5)
    time.sleep(0.3)
    assert len(stack.leftovers()) == 2  # two replicas, not two per racer


def test_daemon_killed_then_up_leaves_one_copy_of_each(stack):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1e6)"
    stack.write(python_service("api", replicas=2) + command_service("stubborn", stubborn))
    stack.up()
    old_daemon = stack.daemon_pid()
    old_pids = {s["pid"] for s in stack.status()["services"]}
    os.kill(old_daemon, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(old_daemon), timeout=5)

    up = stack.cli("up")
    assert up.returncode == 0, up.stderr
    status = stack.status()
    assert status["supervisor"]["pid"] != old_daemon
    assert all(s["state"] == "running" for s in status["services"])
    new_pids = {s["pid"] for s in status["services"]}
    assert not (new_pids & old_pids)
    alive = {p.pid for p in stack.leftovers()}
    assert alive == new_pids  # exactly one copy of each: the stubborn old one was reclaimed
    assert any(e["event"] == "reclaimed" for e in stack.events())


def test_services_exit_when_the_daemon_is_killed(stack):
    stack.write(python_service("api") + command_service("sleeper", SLEEP_FOREVER, replicas=2))
    stack.up()
    children = [s["pid"] for s in stack.status()["services"]]
    os.kill(stack.daemon_pid(), signal.SIGKILL)

    def all_gone():
        return not any(
            psutil.pid_exists(c) and psutil.Process(c).status() != psutil.STATUS_ZOMBIE
            for c in children
        )

    wait_for(all_gone, timeout=5)  # PDEATHSIG: no unsupervised copies, even before `up`


def test_state_file_pointing_at_a_stranger_never_signals_it(stack, tmp_path):
    import subprocess

    stranger = subprocess.Popen([PY, "-c", SLEEP_FOREVER])
    try:
        proc = psutil.Process(stranger.pid)
        stack.run_dir.mkdir(mode=0o700)
        for created in (proc.create_time(), proc.create_time() - 1000):
            (stack.run_dir / "state.json").write_text(
                json.dumps(
                    {
                        "token": "0123456789abcdef",
                        "pid": 1,
                        "clean": False,
                        "processes": [
                            {
                                "service": "api",
                                "replica": 0,
                                "state": "running",
                                "pid": stranger.pid,
                                "create_time": created,
                                "restarts": 0,
                            }
                        ],
                    }
                )
            )
            stack.write(python_service("api"))
            stack.up()
            assert stack.cli("down").returncode == 0
            assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    finally:
        stranger.kill()
        stranger.wait()


def test_sigterm_to_daemon_stops_everything(stack):
    stack.write(python_service("api") + command_service("sleeper", SLEEP_FOREVER))
    stack.up()
    pid = stack.daemon_pid()
    children = [s["pid"] for s in stack.status()["services"]]
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not psutil.pid_exists(pid), timeout=15)
    assert not any(psutil.pid_exists(c) for c in children)
    assert json.loads((stack.run_dir / "state.json").read_text())["clean"] is True


def test_down_stops_sigstopped_replicas_by_their_stop_signal(stack):
    # every replica gets its stop signal, then SIGCONT: a stopped process runs its
    # handler and exits cleanly, long before the stop timeout would SIGKILL it
    handler = (
        "import signal, sys, time; "
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(1e6)"
    )
    stack.write(command_service("paused", handler, replicas=3, extra="stop_timeout = 30"))
    stack.up()
    pids = [r["pid"] for r in stack.replicas("paused")]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    assert stack.cli("down").returncode == 0
    assert time.monotonic() - started < 10
    stopped = [e for e in stack.events() if e["event"] == "stopped"]
    assert sorted(e["pid"] for e in stopped) == sorted(pids)
    assert all(e["detail"] == "exit status 0" for e in stopped)


def test_depends_on_orders_start_and_stop(stack):
    stack.write(
        python_service("db", cls="SlowStart", extra='env = { SLOW_START = "0.4" }\n')
        + python_service("api", extra='depends_on = ["DB"]\n')
    )
    stack.up()
    events = [(e.get("service"), e["event"]) for e in stack.events()]
    assert events.index(("db", "running")) < events.index(("api", "spawned"))
    stack.cli("down")
    events = [(e.get("service"), e["event"]) for e in stack.events()]
    assert events.index(("api", "stopped")) < events.index(("db", "stopped"))


# --- why a process is not running, and its own lines only ---------------------------


def fatal_reason(stack, name: str) -> str:
    """`up` fails (exit 3); the reason it prints for NAME.0 is the one `status` shows."""
    up = stack.cli("up")
    assert up.returncode == 3, up.stdout + up.stderr
    (replica,) = stack.replicas(name)
    assert replica["state"] == "fatal"
    assert f"{name}.0 is FATAL: {replica['last_exit']}\n" in up.stderr
    wide = stack.cli("status", env={**os.environ, "COLUMNS": "300"})  # no wrapping
    assert f"fatal ({replica['last_exit']})" in wide.stdout
    return replica["last_exit"]


def test_missing_program_says_cannot_execute(stack):
    stack.write('[services.a]\ncommand = "/no/such/binary"\n')
    reason = fatal_reason(stack, "a")
    assert reason == "cannot execute /no/such/binary: No such file or directory"
    fatal = [e for e in stack.events() if e["event"] == "fatal"]
    assert fatal[0]["detail"] == reason


def test_exec_failure_behind_setpriv_is_fatal_at_once_with_reason(stack):
    # the file exists and is executable, so only the exec itself can fail: its
    # interpreter is missing (a script copied from another machine)
    script = stack.root / "tool.sh"
    script.write_text("#!/no/such/interpreter\necho never\n")
    script.chmod(0o755)
    stack.write(f'[services.tool]\ncommand = "./tool.sh"\ncwd = "{stack.root}"\n')
    reason = fatal_reason(stack, "tool")
    assert reason == "cannot execute ./tool.sh: No such file or directory"
    (tool,) = stack.replicas("tool")
    assert tool["restarts"] == 0  # not a crash loop: retrying cannot help
    assert any(e["event"] == "fatal" and e["detail"] == reason for e in stack.events())


def test_relative_program_runs_from_the_services_cwd(stack):
    script = stack.root / "serve.sh"
    script.write_text("#!/bin/sh\necho serving\nexec sleep 1000000\n")
    script.chmod(0o755)
    # no `cwd`: the daemon's own, the config's directory ("./x" once became "x", a PATH lookup)
    stack.write('[services.tool]\ncommand = "./serve.sh"\nstart_seconds = 0.3\n')
    stack.up()
    assert "serving" in (stack.run_dir / "logs" / "tool.0.log").read_text()


def test_python_service_dying_in_setup_shows_its_exception(stack):
    stack.write(python_service("db", cls="NoDatabase"), settings="max_restarts = 1\n")
    assert fatal_reason(stack, "db") == "RuntimeError: no database"
    exits = [e for e in stack.events() if e["event"] == "exited"]
    assert exits and all("RuntimeError: no database" in e["detail"] for e in exits)
    fatal = [e for e in stack.events() if e["event"] == "fatal"]
    assert "RuntimeError: no database" in fatal[0]["detail"]


def test_python_service_failing_on_import_at_a_restart_shows_why(stack):
    module = stack.root / "flaky.py"
    module.write_text("from procorch.services import Service\n\nclass Api(Service):\n    pass\n")
    stack.write(
        f'[services.api]\nmodule = "flaky:Api"\ncwd = "{stack.root}"\n',
        settings="max_restarts = 1\n",
    )
    stack.up()
    module.write_text('raise ImportError("half-deployed")\n')  # a deploy in progress
    restart = stack.cli("restart", "api")
    assert restart.returncode == 3
    (api,) = stack.replicas("api")
    assert api["state"] == "fatal"
    assert api["last_exit"] == "ImportError: half-deployed"


def test_setup_that_hangs_says_no_heartbeat(stack):
    stack.write(
        python_service("stuck", cls="HangsInSetup", extra="heartbeat_timeout = 0.5\n"),
        settings="max_restarts = 1\n",
    )
    reason = fatal_reason(stack, "stuck")
    assert reason.startswith("no heartbeat after "), reason
    assert "SIGKILL" not in reason
    exits = [e for e in stack.events() if e["event"] == "exited"]
    assert exits and "no heartbeat after" in exits[0]["detail"]


def test_up_shows_only_the_failed_runs_own_lines(stack):
    stack.write(
        command_service("crasher", "import os; print('run', os.getpid()); raise SystemExit(3)"),
        settings="max_restarts = 2\n",
    )
    up = stack.cli("up")
    assert up.returncode == 3
    shown = [line for line in up.stderr.splitlines() if line.startswith("  | ")]
    last_pid = [e["pid"] for e in stack.events() if e["event"] == "spawned"][-1]
    assert shown == [f"  | run {last_pid}"]  # three runs wrote; only the last is shown
    (crasher,) = stack.replicas("crasher")
    log = (stack.run_dir / "logs" / "crasher.0.log").read_bytes()
    run = log[crasher["log_offset"] :].decode().splitlines()
    assert [split_stamp(line)[1] for line in run] == [f"run {last_pid}"]


# --- logging in Python services --------------------------------------------------------

TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def test_logging_in_a_service_reaches_its_log_at_the_configured_level(stack):
    import re

    log = stack.run_dir / "logs" / "chatty.0.log"
    for level, shown, hidden in (("DEBUG", ("INFO", "DEBUG"), ()), ("INFO", ("INFO",), ("DEBUG",))):
        stack.write(python_service("chatty", cls="Chatty"), settings=f'log_level = "{level}"\n')
        stack.up()
        (chatty,) = stack.replicas("chatty")
        run = log.read_text()[chatty["log_offset"] :].splitlines()  # this run's (ASCII)
        lines = [split_stamp(line)[1] for line in run]  # without the time of capture
        for wanted in shown:
            pattern = f"^{TIMESTAMP} {wanted} chatty: {wanted.lower()} from setup$"
            assert any(re.match(pattern, line) for line in lines), (pattern, lines)
        for unwanted in hidden:
            assert not any(f"{unwanted.lower()} from setup" in line for line in lines), lines
        assert stack.cli("down").returncode == 0


def test_a_command_exiting_127_itself_is_an_ordinary_crash(stack):
    """Only a process that never got past setpriv failed to execute, whatever it prints."""
    lookalike = "print('setpriv: failed to execute x: nope', flush=True); raise SystemExit(127)"
    stack.write(command_service("liar", lookalike), settings="max_restarts = 1\n")
    assert fatal_reason(stack, "liar") == "exit status 127"
    (liar,) = stack.replicas("liar")
    assert liar["restarts"] == 1  # restarted by policy, as any crash
