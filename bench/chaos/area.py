"""The chaos area: kill -9 every role of a real stack while clients write and retry.

    python bench/chaos              # 3 runs of 120 s
    python bench/chaos --quick      # 1 run of 30 s
    python bench/chaos --seconds 60 --clients 3 --seed 7

Runs the engine the test suite runs for 20 s (tests/chaos.py; runner.py here) for longer,
and reports requests sent, acknowledged, retried, lost, duplicated, 5xx answers, jobs
stuck, processes left after `down`, and each role's recovery time from its kill -9 until
it serves again. It uses the test suite's helpers (tests/conftest.py): pytest and
requests join bench/.venv for it.
"""

from __future__ import annotations

import argparse

from harness.area import Area, Part, RunOutput, Target


def _chaos(args: argparse.Namespace) -> RunOutput:
    from chaos import runner  # imports tests/: only when the part runs

    return runner.run(args)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=None, help="default 120 (30 with --quick)")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None)


AREA = Area(
    name="chaos",
    title="Chaos: kill -9 every role under load",
    doc=__doc__ or "",
    options=_options,
    parts=(
        Part(
            "chaos",
            _chaos,
            ("psutil", "pytest", "requests"),
            quick=True,
            targets=tuple(
                Target(f"{what}: none", key, "<=", 0)
                for key, what in (
                    ("lost", "acknowledged writes lost"),
                    ("duplicated", "writes duplicated"),
                    ("jobs_stuck", "jobs stuck"),
                    ("leftovers", "processes left after down"),
                )
            ),
        ),
    ),
)
