"""Benchmark job queues on a no-op job with JSON arguments: what each queue itself costs.

    python bench/jobsnoop.py            # full run, several minutes; updates bench/RESULTS.md
    python bench/jobsnoop.py --quick    # smoke run: 500 jobs a round, fewer samples

The same harness as bench/jobs.py (its plan, figures and clean-up), with every peer running
`noop(*args, **kwargs)` (bench/jobnoop.py) on the same small JSON payload instead of
F(n) mod m: RQ's `Worker` and `SimpleWorker`, Huey on SQLite with a consumer of threads and
one of processes, and procorch on SQLite and on Redis. Its section of RESULTS.md is
"jobs-noop"; bench/jobs.py keeps the Fibonacci figures in "jobs".
"""

from __future__ import annotations

import argparse
import sys

import benchargs
import benchvenv
import jobs
from jobplan import NOOP


def parse_args(argv: list[str]) -> argparse.Namespace:
    return benchargs.parse(
        __doc__,
        argv,
        quick="500 jobs a round, fewer samples",
        peers=(
            "rq-worker",
            "rq-simple",
            "huey-thread",
            "huey-process",
            "procorch-sqlite",
            "procorch-redis",
        ),
        optional_peers=", plus procorch-sqlite-full (SQLite with synchronous = full)",
    )


def main(argv: list[str]) -> int:
    return benchvenv.main(
        __file__, argv, parse_args, lambda args: jobs.run(args, NOOP), jobs.PACKAGES
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
