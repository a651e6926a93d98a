"""Hooks cost supervision nothing: kill -9 to replacement with and without a hanging hook.

    python bench/hooks.py [--kills 20] [--no-write]

Two stacks of 4 sleeper replicas, one without hooks and one whose hook (on exited,
spawned and running) hangs until its timeout kills it. In each, a replica that has run
for over a second (past the crash-loop window, so it is replaced at once) gets SIGKILL,
`--kills` times round the replicas; the figure is the time from just before the kill to
the `spawned` event of its replacement in events.log (stamped to the millisecond, so
each figure is rounded up by up to 1 ms). The target: under 5 ms at the median and the
same with the hook as without it. Prints a markdown section and puts it into
bench/RESULTS.md (unless --no-write). Needs the test extra (`pip install '.[test]'`).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import publish  # noqa: E402  (bench/ is on the path: this script is in it)

from tests.conftest import (  # noqa: E402  (the root, only now)
    PY,
    Stack,
    command_service,
    epoch,
    events_log,
)

REPLICAS = 4
SLEEPER = str(ROOT / "bench" / "sleeper.py")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        plain = measure(Path(tmp) / "a", hook=False, kills=args.kills)
        hooked = measure(Path(tmp) / "b", hook=True, kills=args.kills)
    lines = [
        "<!-- hooks:begin -->",
        "## Hooks: kill -9 to replacement with a hanging hook (`bench/hooks.py`)",
        "",
        f"{REPLICAS} sleeper replicas, {args.kills} kills each; ms from the kill to the "
        "`spawned` event (rounded up to the ms).",
        "",
        "|  | no hook (ms) | hanging hook (ms) | hook/none | target |",
        "|---|---|---|---|---|",
    ]
    for name, pick in (("median", statistics.median), ("max", max)):
        a, b = pick(plain), pick(hooked)
        target = f"< {TARGET_MS:g} ms: {'yes' if b < TARGET_MS else 'no'}"
        lines.append(
            f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f}× | {target if name == 'median' else '—'} |"
        )
    lines.append("<!-- hooks:end -->")
    publish("\n".join(lines) + "\n", "hooks", write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
