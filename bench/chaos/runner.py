"""Chaos, for longer: kill -9 every role of a real stack while clients write and retry.

    python bench/chaos [--quick] [--seconds 120] [--clients 3] [--seed N]

Runs the engine the suite runs for 20 s (tests/chaos.py) and prints requests sent,
acknowledged, retried, lost, duplicated, 5xx answers, and each role's recovery time
(median, max) from its kill -9 until it serves again. Uses the test suite's helpers
(pytest joins bench/.venv for them); the stack runs in a temporary folder and is stopped
at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # tests/ of the repository; procorch stays the installed one

from harness.area import Figure, RunOutput  # noqa: E402
from harness.report import header, section  # noqa: E402

from tests.chaos import Chaos  # noqa: E402  (the repository root is on the path only now)
from tests.conftest import free_port  # noqa: E402


def run(args: argparse.Namespace) -> RunOutput:
    seconds = args.seconds or (30.0 if args.quick else 120.0)
    with tempfile.TemporaryDirectory(prefix="procorch-chaos-") as folder:
        chaos = Chaos(Path(folder), free_port(), clients=args.clients, seed=args.seed)
        got = chaos.run(seconds=seconds).as_dict()
    out = RunOutput()
    for key in COUNTS:
        out.figures[key] = Figure(got[key], "count")
    for role, r in got["roles"].items():
        if r["median_s"] is not None:
            out.figures[f"{role} recovery median"] = Figure(r["median_s"], "ms")
            out.figures[f"{role} recovery max"] = Figure(r["max_s"], "ms")
    text = render(got, seconds, args)
    command = "python bench/chaos" + (" --quick" if args.quick else "")
    head = header(command, method=[f"{seconds:g} s of kill -9s; the engine of tests/chaos.py"])
    out.sections["chaos-run"] = section(
        "chaos-run", "Chaos: kill -9 every role under load", head, [text, ""]
    )
    return out


COUNTS = (
    "writes",
    "acknowledged",
    "retried",
    "lost",
    "duplicated",
    "responses_5xx",
    "jobs",
    "jobs_stuck",
    "leftovers",
)


def render(report: dict, seconds: float, args: argparse.Namespace) -> str:
    lines = [
        f"chaos: {seconds:g} s, {args.clients} clients, seed {args.seed}",
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
