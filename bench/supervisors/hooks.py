"""Hooks cost supervision nothing: kill -9 to replacement with and without a hanging hook.

    python bench/supervisors --parts hooks [--quick]    # 20 kills (8 with --quick)

Two stacks of 4 sleeper replicas, one without hooks and one whose hook (on exited,
spawned and running) hangs until its timeout kills it. In each, a replica that has run
for over a second (past the crash-loop window, so it is replaced at once) gets SIGKILL,
20 times (8 with --quick) round the replicas; the figure is the time from just before the kill to
the `spawned` event of its replacement in events.log (stamped to the millisecond, so
each figure is rounded up by up to 1 ms). The target: under 5 ms at the median and the
same with the hook as without it. Its section of bench/RESULTS.md is "hooks". It uses the
test suite's Stack (tests/conftest.py: pytest joins bench/.venv for it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # tests/ of the repository; procorch stays the installed one

from harness.area import Figure, RunOutput  # noqa: E402
from harness.report import section  # noqa: E402

from tests.conftest import (  # noqa: E402  (the root, only now)
    PY,
    Stack,
    command_service,
    epoch,
    events_log,
)

REPLICAS = 4
SLEEPER = str(Path(__file__).resolve().parent / "sleeper.py")
HANG = "import sys, time; sys.stdin.read(); time.sleep(1e6)"
TARGET_MS = 5.0


def _replaced(stack: Stack, replica: int, old: int, killed_at: float) -> float:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for e in reversed(events_log(stack.run_dir)):
            if (
                e["event"] == "spawned"
                and e.get("replica") == replica
                and e["pid"] != old
                and epoch(e["time"]) >= killed_at - 0.001
            ):
                return epoch(e["time"]) + 0.001  # the stamp is cut to the millisecond
        time.sleep(0.002)
    raise SystemExit(f"replica {replica} was not replaced within 10 s")


def measure(root: Path, hook: bool, kills: int) -> list[float]:
    """Milliseconds from kill -9 to the replacement's spawn, `kills` times."""
    stack = Stack(root)
    toml = command_service("sleeper", "", replicas=REPLICAS, start_seconds=0.1).replace(
        '"-c", ""', json.dumps(SLEEPER)
    )
    if hook:
        toml += (
            '\n[[hooks]]\non = ["exited", "spawned", "running"]\n'
            f'command = [{json.dumps(PY)}, "-c", {json.dumps(HANG)}]\n'
            "timeout = 30.0\nmax_runs = 1000\n"
        )
    stack.write(toml)
    stack.up()
    try:
        pids = {r["replica"]: r["pid"] for r in stack.replicas("sleeper")}
        born = {i: time.monotonic() for i in pids}
        found = []
        for k in range(kills):
            i = k % REPLICAS
            time.sleep(max(0.0, born[i] + 1.2 - time.monotonic()))  # past the crash window
            at = time.time()
            os.kill(pids[i], signal.SIGKILL)
            spawned = _replaced(stack, i, pids[i], at)
            found.append((spawned - at) * 1000)
            born[i] = time.monotonic()
            pids[i] = next(r["pid"] for r in stack.replicas("sleeper") if r["replica"] == i)
        return found
    finally:
        stack.cleanup()


def run(args: argparse.Namespace) -> RunOutput:
    kills = 8 if args.quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        plain = measure(Path(tmp) / "a", hook=False, kills=kills)
        hooked = measure(Path(tmp) / "b", hook=True, kills=kills)
    lines = [
        f"{REPLICAS} sleeper replicas, {kills} kills each; ms from the kill to the "
        "`spawned` event (rounded up to the ms).",
        "",
        "|  | no hook (ms) | hanging hook (ms) | hook/none | target |",
        "|---|---|---|---|---|",
    ]
    out = RunOutput()
    for name, pick in (("median", statistics.median), ("max", max)):
        a, b = pick(plain), pick(hooked)
        target = f"< {TARGET_MS:g} ms: {'yes' if b < TARGET_MS else 'no'}"
        lines.append(
            f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f}× | {target if name == 'median' else '—'} |"
        )
        out.figures[f"kill to replacement, no hook, {name}"] = Figure(a / 1000, "ms")
        out.figures[f"kill to replacement, hanging hook, {name}"] = Figure(b / 1000, "ms")
    out.ratios["kill to replacement median, hook ÷ no hook"] = statistics.median(
        hooked
    ) / statistics.median(plain)
    out.sections["hooks"] = section(
        "hooks",
        "Hooks: kill -9 to replacement with a hanging hook (`bench/supervisors/hooks.py`)",
        [],
        lines + [""],
    )
    return out
