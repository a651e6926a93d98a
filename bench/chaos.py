"""Chaos, for longer: kill -9 every role of a real stack while clients write and retry.

    python bench/chaos.py [--seconds 120] [--clients 3] [--seed N] [--json]

Runs the engine the suite runs for 20 s (tests/chaos.py) and prints requests sent,
acknowledged, retried, lost, duplicated, 5xx answers, and each role's recovery time
(median, max) from its kill -9 until it serves again. Needs the test extra
(`pip install '.[test]'`); the stack runs in a temporary folder and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos import Chaos  # noqa: E402  (the repository root is on the path only now)
from tests.conftest import free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="procorch-chaos-") as folder:
        chaos = Chaos(Path(folder), free_port(), clients=args.clients, seed=args.seed)
        report = chaos.run(seconds=args.seconds).as_dict()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report, args))
    bad = report["lost"] + report["duplicated"] + report["jobs_stuck"] + report["leftovers"]
    return 1 if bad else 0


def render(report: dict, args: argparse.Namespace) -> str:
    lines = [
        f"chaos: {args.seconds:g} s, {args.clients} clients, seed {args.seed}",
        "",
        "| writes | acknowledged | retried | unanswered | refused | lost | duplicated "
        "| 5xx answers | jobs | jobs stuck | left after down |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        "| {writes:,} | {acknowledged:,} | {retried:,} | {unanswered} | {refused} | {lost} "
        "| {duplicated} | {responses_5xx:,} | {jobs:,} | {jobs_stuck} | {leftovers} |".format(
            **report
        ),
        "",
        "| role | kill -9s | recovery median | max | never back |",
        "|---|---|---|---|---|",
    ]
    for role, r in report["roles"].items():
        median = "-" if r["median_s"] is None else f"{r['median_s'] * 1000:.0f} ms"
        most = "-" if r["max_s"] is None else f"{r['max_s'] * 1000:.0f} ms"
        lines.append(f"| {role} | {r['kills']} | {median} | {most} | {r['never_recovered']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
