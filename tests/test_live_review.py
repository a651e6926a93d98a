"""Live changes on a running stack, the cases found in review: real daemons, real
processes, events.log as the daemon wrote it."""

from __future__ import annotations

import json

from tests.conftest import SLEEP_FOREVER, Stack, command_service


def spawns(stack: Stack, name: str, index: int) -> int:
    logged = [json.loads(line) for line in (stack.run_dir / "events.log").read_text().splitlines()]
    return sum(
        1
        for e in logged
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
