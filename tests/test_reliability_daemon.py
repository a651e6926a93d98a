"""The daemon under trouble (issue 10): it gives up on crash loops only, and not forever.

Real stacks driven through the real CLI, real processes and real signals.
"""

from __future__ import annotations

import os
import signal
import time

from tests.conftest import SLEEP_FOREVER, Stack, command_service, wait_for


def events_of(stack: Stack, service: str, kind: str) -> list[dict]:
    return [e for e in stack.events() if e.get("service") == service and e["event"] == kind]


# --- giving up: only on crash loops, and not forever ---------------------------------


def test_long_running_service_killed_eight_times_is_never_fatal(stack: Stack) -> None:
    stack.write(command_service("sleeper", SLEEP_FOREVER, start_seconds=0.1))  # max_restarts 5
    stack.up()
    for kills in range(1, 9):
        time.sleep(1.2)  # it has been running over a second: a crash, not a crash loop
        (before,) = stack.replicas("sleeper")
        assert before["state"] == "running"
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(
            lambda n=kills: (
                stack.replicas("sleeper")[0]["restarts"] == n
                and stack.replicas("sleeper")[0]["state"] == "running"
            ),
            timeout=5,
        )
    assert not events_of(stack, "sleeper", "fatal")
    assert len(events_of(stack, "sleeper", "exited")) == 8


def test_crash_loop_goes_fatal_then_is_retried_after_fatal_retry(stack: Stack) -> None:
    crash = "import sys; sys.exit(3)"
    stack.write(
        command_service("looper", crash, extra="fatal_retry = 1.5\n")  # its own cool-off
        + command_service("stuck", crash),  # the global one: never
        settings="max_restarts = 2\nfatal_retry = 0\n",
    )
    up = stack.cli("up")
    assert up.returncode == 3, up.stdout + up.stderr
    fatal = events_of(stack, "looper", "fatal")
    assert len(fatal) == 1 and "3 crashes within 60s" in fatal[0]["detail"]
    assert len(events_of(stack, "looper", "spawned")) == 3  # the start and 2 restarts
    assert not events_of(stack, "looper", "fatal-retry")  # not before its cool-off

    wait_for(lambda: events_of(stack, "looper", "fatal-retry"), timeout=5)
    wait_for(lambda: len(events_of(stack, "looper", "fatal")) == 2, timeout=5)
    (retry,) = events_of(stack, "looper", "fatal-retry")[:1]
    assert retry["detail"].startswith("after 1.")
    kinds = [e["event"] for e in stack.events() if e.get("service") == "looper"]
    first = kinds.index("fatal-retry")
    again = kinds.index("fatal", first)
    assert kinds[first + 1] == "spawned"  # a fresh set of 3 tries, then FATAL again
    assert kinds[first:again].count("spawned") == 3
    # fatal_retry = 0 (the global setting here): it stays FATAL
    assert len(events_of(stack, "stuck", "fatal")) == 1
    assert not events_of(stack, "stuck", "fatal-retry")
    assert stack.replicas("stuck")[0]["state"] == "fatal"
