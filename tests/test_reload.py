"""Reload and scale on a running stack: real daemons, real processes, real signals.

What is not in the plan is not touched (same pids); a bad config changes nothing.
"""

from __future__ import annotations

import json
import os
import signal

import psutil

from tests.conftest import (
    SLEEP_FOREVER,
    GatewayStack,
    Stack,
    command_service,
    free_port,
    python_service,
    wait_for,
)


def pids(stack: Stack) -> dict[tuple[str, int], int]:
    return {(s["name"], s["replica"]): s["pid"] for s in stack.status()["services"]}


def sleeper(name: str, replicas: int = 1, extra: str = "") -> str:
    return command_service(name, SLEEP_FOREVER, replicas, extra, start_seconds=0.1)


def test_a_changed_env_replaces_only_that_service(stack: Stack) -> None:
    stack.write(sleeper("a", 2) + sleeper("b", extra="env = { X = '1' }\n"))
    stack.up()
    before = pids(stack)
    stack.write(sleeper("a", 2) + sleeper("b", extra="env = { X = '2' }\n"))
    result = stack.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "changed: b (env; stop, then start)" in result.stdout
    assert "unchanged: a" in result.stdout
    after = pids(stack)
    assert after[("a", 0)] == before[("a", 0)] and after[("a", 1)] == before[("a", 1)]
    assert after[("b", 0)] != before[("b", 0)]
    assert psutil.Process(after[("b", 0)]).environ()["X"] == "2"


def test_a_changed_service_with_replicas_is_rolled_one_at_a_time(stack: Stack) -> None:
    stack.write(sleeper("a", 2, extra="env = { X = '1' }\n") + sleeper("b"))
    stack.up()
    before = pids(stack)
    stack.write(sleeper("a", 2, extra="env = { X = '2' }\n") + sleeper("b"))
    result = stack.cli("reload", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["plan"]["changed"] == {"a": ["env"]} and answer["plan"]["rolling"] == ["a"]
    after = pids(stack)
    assert after[("b", 0)] == before[("b", 0)]
    assert {after[("a", 0)], after[("a", 1)]}.isdisjoint({before[("a", 0)], before[("a", 1)]})
    # each old replica stopped only once its replacement was running
    events = [e for e in stack.events() if e.get("service") == "a"]
    for i in (0, 1):
        running = next(
            n
            for n, e in enumerate(events)
            if e["event"] == "running" and e.get("pid") == after[("a", i)]
        )
        stopping = next(
            n
            for n, e in enumerate(events)
            if e["event"] == "stopping" and e.get("pid") == before[("a", i)]
        )
        assert running < stopping


def test_scale_up_keeps_the_first_pids_and_down_stops_the_highest(stack: Stack) -> None:
    stack.write(sleeper("a", 2) + sleeper("b"))
    stack.up()
    before = pids(stack)
    up = stack.cli("scale", "a=4")
    assert up.returncode == 0, up.stderr
    assert "a: 4 replicas, until the next reload" in up.stderr
    after = pids(stack)
    assert [after[("a", i)] for i in (0, 1)] == [before[("a", i)] for i in (0, 1)]
    assert after[("b", 0)] == before[("b", 0)] and len(after) == 5
    down = stack.cli("scale", "a=2", "--json")
    assert down.returncode == 0, down.stderr
    assert pids(stack) == before
    stopped = [e for e in stack.events() if e["event"] == "stopped" and e.get("service") == "a"]
    assert sorted(e["replica"] for e in stopped) == [2, 3]
    assert all("SIGTERM" in e["detail"] for e in stopped)  # asked to stop, not killed
    assert not psutil.pid_exists(after[("a", 3)]) or (
        psutil.Process(after[("a", 3)]).status() == psutil.STATUS_ZOMBIE
    )


def test_reload_2_to_4_keeps_0_and_1_and_the_next_reload_undoes_a_scale(stack: Stack) -> None:
    stack.write(sleeper("a", 2))
    stack.up()
    before = pids(stack)
    stack.write(sleeper("a", 4))
    result = stack.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "scaled: a (2 -> 4 replicas)" in result.stdout
    after = pids(stack)
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())
    assert stack.cli("scale", "a=3").returncode == 0
    assert len(pids(stack)) == 3
    again = stack.cli("reload")  # the file says 4: the scale lasted until now
    assert "scaled: a (3 -> 4 replicas)" in again.stdout
    assert {k: v for k, v in pids(stack).items() if k[1] < 3} == {
        k: v for k, v in after.items() if k[1] < 3
    }


def test_scale_save_edits_the_file_keeping_its_comments(stack: Stack) -> None:
    stack.write(
        "# my stack\n" + sleeper("a", 2).replace("replicas = 2", "replicas = 2  # web workers")
    )
    text = stack.config.read_text().replace("replicas = 1\n", "")
    stack.config.write_text(text + "\n[services.b]  # no replicas line\ncommand = 'sleep 1000'\n")
    stack.config.chmod(0o640)  # a file that may hold a token: its mode is kept
    stack.up()
    result = stack.cli("scale", "a=3", "B=2", "--save")
    assert result.returncode == 0, result.stderr
    assert stack.config.stat().st_mode & 0o777 == 0o640
    assert not list(stack.config.parent.glob(f".{stack.config.name}*"))  # no temp file left
    saved = stack.config.read_text()
    assert "replicas = 3  # web workers" in saved and "# my stack" in saved
    assert "[services.b]  # no replicas line\nreplicas = 2\n" in saved
    assert "nothing to change" in stack.cli("reload").stdout


def test_scale_refuses_bad_input_in_one_line(stack: Stack) -> None:
    # an inline table: valid, but no header of its own for --save to write under
    stack.write("[services]\na = { command = 'sleep 1000', start_seconds = 0.1 }\n")
    stack.up()
    before, text = pids(stack), stack.config.read_text()
    for args, code in ((["a"], 2), (["a=0"], 2), (["nope=2"], 1), (["a=2", "--save"], 2)):
        result = stack.cli("scale", *args)
        assert result.returncode == code, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert pids(stack) == before and stack.config.read_text() == text


def test_a_bad_config_changes_nothing(stack: Stack) -> None:
    stack.write(sleeper("a"))
    stack.up()
    before = pids(stack)
    good = stack.config.read_text()
    stack.config.write_text(good + sleeper("b") + "restart = 'sometimes'\n")
    result = stack.cli("reload")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "restart" in result.stderr
    # and by SIGHUP: the daemon says so once and runs on as it was
    daemon = stack.daemon_pid()
    assert daemon is not None
    os.kill(daemon, signal.SIGHUP)
    failed = wait_for(lambda: [e for e in logged(stack) if e["event"] == "reload-failed"])
    assert "restart" in failed[0]["detail"]
    stack.config.write_text(good)  # status reads the config too
    assert psutil.pid_exists(daemon) and pids(stack) == before


def logged(stack: Stack) -> list[dict]:
    """events.log itself: the CLI cannot read a bad config to find it."""
    return [json.loads(line) for line in (stack.run_dir / "events.log").read_text().splitlines()]


def test_kill_hup_reloads(stack: Stack) -> None:
    stack.write(sleeper("a"))
    stack.up()
    before = pids(stack)
    stack.write(sleeper("a") + sleeper("b"))
    os.kill(stack.daemon_pid() or 0, signal.SIGHUP)
    wait_for(lambda: stack.replicas("b") and stack.replicas("b")[0]["state"] == "running")
    assert pids(stack)[("a", 0)] == before[("a", 0)]
    assert [e["detail"] for e in stack.events() if e["event"] == "reload"] == ["added b"]


def test_a_setting_that_cannot_change_live_is_named_and_refused(stack: Stack) -> None:
    stack.write(sleeper("a"))
    stack.up()
    before = pids(stack)
    stack.write(sleeper("a") + sleeper("b") + "\n[gateway]\nenabled = true\n")
    dry = stack.cli("reload", "--dry-run")
    assert dry.returncode == 2  # for a script: this would be refused
    assert "refused: [gateway] enabled" in dry.stdout and "added: b" in dry.stdout
    result = stack.cli("reload")
    assert result.returncode == 2
    assert "nothing changed: [gateway] enabled cannot change live" in result.stderr
    assert pids(stack) == before


def test_dry_run_changes_nothing(stack: Stack) -> None:
    stack.write(sleeper("a") + sleeper("b"))
    stack.up()
    before = pids(stack)
    stack.write(sleeper("a", extra="env = { X = '1' }\n") + sleeper("c"))
    result = stack.cli("reload", "--dry-run")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "added: c",
        "removed: b",
        "changed: a (env; stop, then start)",
    ]
    assert pids(stack) == before


def test_added_python_service_is_callable_and_removed_one_is_gone(stack: Stack) -> None:
    stack.write(python_service("keep") + python_service("old", "Echo"))
    stack.up()
    before = pids(stack)
    stack.write(python_service("keep") + python_service("new", "Echo", replicas=2))
    result = stack.cli("reload")
    assert result.returncode == 0, result.stderr
    call = stack.cli("call", "new", "echo", '{"x": 1}', "--json")
    assert call.returncode == 0, call.stderr
    assert json.loads(call.stdout)["data"]["x"] == 1
    names = {s["name"] for s in stack.status()["services"]}
    assert names == {"keep", "new"}
    assert pids(stack)[("keep", 0)] == before[("keep", 0)]
    gone = stack.cli("call", "old", "echo", "{}")
    assert gone.returncode == 1 and "not found" in gone.stderr.lower()


def test_up_on_a_changed_config_shows_the_plan_and_up_reload_applies_it(stack: Stack) -> None:
    stack.write(sleeper("a"))
    stack.up()
    before = pids(stack)
    stack.write(sleeper("a") + sleeper("b"))
    shown = stack.cli("up")
    assert shown.returncode == 1
    assert "  added: b" in shown.stderr.splitlines()
    assert "`procorch up --reload`" in shown.stderr
    assert pids(stack) == before
    applied = stack.cli("up", "--reload")
    assert applied.returncode == 0, applied.stderr
    assert set(pids(stack)) == {("a", 0), ("b", 0)} and pids(stack)[("a", 0)] == before[("a", 0)]


def test_the_gateway_follows_a_reload_without_restarting(tmp_path) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write_gateway(extra=python_service("extra", "Counter"))
        gateway.up()
        gateway_pid = gateway.pid_of("Gateway")
        assert "extra" in gateway.get("/services").json()["services"]
        gateway.write_gateway(extra=python_service("added", "Counter", replicas=2))
        assert gateway.cli("reload").returncode == 0
        services = gateway.get("/services").json()["services"]
        assert "added" in services and "extra" not in services

        def counted() -> bool:  # its statistics are read from the shared table
            lines = gateway.get("/metrics").text.splitlines()
            return any(
                line.startswith("procorch_service_requests_total{")
                and 'service="added"' in line
                and 'replica="1"' in line
                and float(line.rsplit(" ", 1)[1]) > 0
                for line in lines
            )

        wait_for(counted)
        assert 'service="extra"' not in gateway.get("/metrics").text
        assert gateway.pid_of("Gateway") == gateway_pid
    finally:
        gateway.cleanup()


def test_the_stats_table_grows_for_many_new_replicas(stack: Stack) -> None:
    stack.write("[services.a]\ncommand = 'sleep 1000'\nstart_seconds = 0.1\n")
    stack.up()
    slots_before = (stack.run_dir / "stats.bin").stat().st_size // 64
    result = stack.cli("scale", f"a={slots_before + 5}", "--json")
    assert result.returncode == 0, result.stderr
    states = [s["state"] for s in json.loads(result.stdout)["services"]]
    assert states == ["running"] * (slots_before + 5)
    assert (stack.run_dir / "stats.bin").stat().st_size // 64 >= slots_before + 5
    assert stack.cli("scale", "a=1").returncode == 0
    assert len(pids(stack)) == 1


def test_an_added_service_with_a_probe_runs_once_it_answers(stack: Stack) -> None:
    stack.write(sleeper("a"))  # no probe at all: the daemon started without a prober
    stack.up()
    port = free_port()
    server = (
        f"import socket, time; s = socket.create_server(('127.0.0.1', {port})); time.sleep(1e6)"
    )
    stack.write(
        sleeper("a") + command_service("web", server, extra=f"health = {{ tcp = {port} }}\n")
    )
    result = stack.cli("reload", "--json")
    assert result.returncode == 0, result.stderr
    assert [s["state"] for s in json.loads(result.stdout)["services"]] == ["running"]


def test_a_key_only_the_daemon_reads_changes_without_a_restart(stack: Stack) -> None:
    stack.write(sleeper("a", 2))
    stack.up()
    before = pids(stack)
    stack.write(sleeper("a", 2, extra="stop_timeout = 0.5\nrestart = 'never'\n"))
    result = stack.cli("reload")
    assert "changed: a (restart, stop_timeout; live)" in result.stdout
    assert pids(stack) == before
    os.kill(before[("a", 0)], signal.SIGKILL)  # restart = "never" holds now
    wait_for(lambda: stack.replicas("a")[0]["state"] == "exited")


def test_up_reload_takes_its_gateway_flag(stack: Stack) -> None:
    stack.write(sleeper("a"))
    stack.up()
    before = pids(stack)
    # the flag asks for a change a reload cannot make: said so, not "nothing to change"
    applied = stack.cli("up", "--reload", "--gateway")
    assert applied.returncode == 2, applied.stdout
    assert "nothing changed: [gateway] enabled cannot change live" in applied.stderr
    assert pids(stack) == before
    assert stack.cli("up", "--reload").stdout.endswith("the daemon runs this config\n")
