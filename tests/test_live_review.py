"""Live changes on a running stack, the cases found in review: real daemons, real
processes, events.log as the daemon wrote it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil

from tests.conftest import SLEEP_FOREVER, Stack, command_service, events_log, wait_for

# a service that ignores SIGTERM: what depends on it waits its stop_timeout to stop
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1e6)"


def spawns(stack: Stack, name: str, index: int) -> int:
    return sum(
        1
        for e in events_log(stack.run_dir)
        if e["event"] == "spawned" and (e.get("service"), e.get("replica")) == (name, index)
    )


def test_a_changed_service_that_scales_up_starts_its_new_replicas_once(stack: Stack) -> None:
    def sleeper(replicas: int, x: str) -> str:
        extra = f"env = {{ X = '{x}' }}\n"
        return command_service("a", SLEEP_FOREVER, replicas, extra, start_seconds=0.1)

    stack.write(sleeper(1, "1"))
    stack.up()
    old = stack.pid_of("a")
    stack.write(sleeper(3, "2"))
    result = stack.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "changed: a (env; rolling)" in result.stdout
    replicas = stack.replicas("a")
    assert [s["state"] for s in replicas] == ["running"] * 3
    assert old not in {s["pid"] for s in replicas}
    # 1 and 2 join with the new config: nothing to replace there
    assert (spawns(stack, "a", 0), spawns(stack, "a", 1), spawns(stack, "a", 2)) == (2, 1, 1)


def test_a_removed_service_that_dies_while_its_dependents_stop_is_not_restarted(
    stack: Stack,
) -> None:

    # app ignores TERM, so db (which it depends on) waits its stop_timeout to stop
    keep = command_service("keep", SLEEP_FOREVER, start_seconds=0.1)
    db = command_service("db", SLEEP_FOREVER, start_seconds=0.1)
    app = command_service("app", STUBBORN, start_seconds=0.1)
    stack.write(keep + db + app + "depends_on = ['db']\nstop_timeout = 3\n")
    stack.up()
    db_pid = stack.pid_of("db")
    stack.write(keep)
    reload = stack.start("reload", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: stack.replicas("app")[0]["state"] == "stopping")
        assert stack.replicas("db")[0]["state"] == "running"  # waits for app to go
        os.kill(db_pid, signal.SIGKILL)
        _, err = reload.communicate(timeout=30)
    finally:
        reload.kill()
    assert reload.returncode == 0, err
    assert [s["name"] for s in stack.status()["services"]] == ["keep"]
    assert spawns(stack, "db", 0) == 1  # left as it died, never started again


def test_a_dependency_that_dies_while_down_waits_for_its_dependents_ends_cleanly(
    stack: Stack,
) -> None:

    db = command_service("db", SLEEP_FOREVER, start_seconds=0.1)
    app = command_service("app", STUBBORN, start_seconds=0.1)
    stack.write(db + app + "depends_on = ['db']\nstop_timeout = 1.5\n")
    stack.up()
    db_pid, daemon = stack.pid_of("db"), stack.daemon_pid()
    down = stack.start("down", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: stack.replicas("app")[0]["state"] == "stopping")
        os.kill(db_pid, signal.SIGKILL)
        _, err = down.communicate(timeout=30)
    finally:
        down.kill()
    assert down.returncode == 0, err
    assert daemon is not None and wait_for(lambda: not _alive(daemon))
    assert spawns(stack, "db", 0) == 1


def _alive(pid: int) -> bool:

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_scale_refuses_a_count_whose_last_port_is_above_65535(stack: Stack) -> None:
    stack.write(command_service("web", SLEEP_FOREVER, start_seconds=0.1) + "base_port = 65534\n")
    stack.up()
    pid = stack.pid_of("web")
    assert stack.cli("scale", "web=2").returncode == 0  # 65535: the last port there is
    result = stack.cli("scale", "web=3")
    message = "services.web.base_port: 65534 + 2 (the last replica's port) is above 65535"
    assert (result.returncode, result.stderr) == (1, f"procorch: {message}\n")
    assert [s["pid"] for s in stack.replicas("web")][0] == pid
    assert len(stack.replicas("web")) == 2


def test_output_of_an_escaped_grandchild_never_reaches_the_replica_that_takes_its_slot(
    stack: Stack,
) -> None:

    # a's first process leaves a grandchild outside its process group, which keeps
    # writing into that process's output pipe, and fails; a runs again (a new pipe), is
    # removed, and b, added next, takes a's stats slot
    pidfile = stack.root / "escaped.pid"
    escaper = (
        "import os, sys, time\n"
        f"if not os.path.exists({str(pidfile)!r}) and os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "    while True:\n"
        "        print('escaped', flush=True); time.sleep(0.02)\n"
        f"if not os.path.exists({str(pidfile)!r} + '.ran'):\n"
        f"    open({str(pidfile)!r} + '.ran', 'w').close(); time.sleep(0.3); sys.exit(1)\n"
        "time.sleep(1e6)\n"
    )
    c = command_service("c", SLEEP_FOREVER, start_seconds=0.1)
    stack.write(c + command_service("a", escaper, start_seconds=0.1))
    stack.up()
    wait_for(lambda: stack.replicas("a")[0]["restarts"] == 1 and pidfile.exists())
    wait_for(lambda: stack.replicas("a")[0]["state"] == "running")
    slot = json.loads((stack.run_dir / "state.json").read_text())["processes"][1]["slot"]
    try:
        for config in (c, c + command_service("b", SLEEP_FOREVER, start_seconds=0.1)):
            stack.write(config)
            result = stack.cli("reload")
            assert result.returncode == 0, result.stderr
        state = json.loads((stack.run_dir / "state.json").read_text())["processes"]
        assert [(p["service"], p["slot"]) for p in state][1] == ("b", slot)
        time.sleep(0.3)  # the grandchild writes every 20 ms (until its pipe is closed)
    finally:
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert "escaped" not in (stack.run_dir / "logs" / "b.0.log").read_text()
    assert "error while handling" not in _daemon_log(stack)


def _daemon_log(stack: Stack) -> str:
    path = stack.run_dir / "daemon.log"
    return path.read_text() if path.exists() else ""
