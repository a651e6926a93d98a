"""Benchmark procorch against supervisord and circus, side by side, on a trivial service.

    python bench/supervisors.py            # full run, a few minutes; updates bench/RESULTS.md
    python bench/supervisors.py --quick    # smoke run: N = 4 and 50, fewer repetitions

The script creates bench/.venv on first use (supervisor, circus, psutil, and procorch
installed as a user installs it, afresh each run), then re-runs itself with that venv's
python. Each peer, at its defaults, supervises copies of bench/sleeper.py, and the harness measures:

1. startup: launch until N = 4, 50, 200 children are alive (and, for procorch, until
   `procorch up` returns);
2. crash to replacement: SIGKILL of a child until its replacement is alive (N = 4);
3. `status` command latency (N = 4);
4. the daemon's RSS and CPU seconds over an idle window (N = 50);
5. shutdown: stop command until every child is gone (N = 50).

Every daemon run gets a fresh temporary directory and a marker argument unique to it, and
everything a run started is killed at the end, on error and on Ctrl-C too. A peer that
fails to start (procorch while its CLI is being written, say) is skipped with a note.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import benchargs
import benchvenv

RESULTS_FILE = benchvenv.BENCH_DIR / "RESULTS.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    return benchargs.parse(
        __doc__,
        argv,
        quick="N = 4 and 50, fewer repetitions",
        peers=("supervisord", "circus", "procorch"),
    )


def run(args: argparse.Namespace) -> int:
    # Only importable inside bench/.venv (psutil), hence imported here, after the re-exec.
    import metrics
    import procs
    import report
    from peers import ALL_PEERS

    wanted = benchargs.wanted_peers(args, [p.name for p in ALL_PEERS])
    peers = [p for p in ALL_PEERS if p.name in wanted]
    plan = metrics.QUICK if args.quick else metrics.FULL
    run_id = f"pcbench-{uuid.uuid4().hex[:10]}"
    root = Path(tempfile.mkdtemp(prefix=f"{run_id}-"))
    metrics.log(f"[bench] run {run_id}, working directory {root}")
    benchargs.interrupt_on_sigterm()
    try:
        results = metrics.Runner(peers, plan, root, run_id).run()
    finally:
        procs.kill(procs.pids_mentioning(run_id))  # daemons, children, stray commands
        if args.keep_tmp:
            metrics.log(f"[bench] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    command = "python bench/supervisors.py" + (" --quick" if args.quick else "")
    section = report.render(results, plan, peers, command)
    print(section)
    if not args.no_write:
        report.write_section(RESULTS_FILE, section)
        metrics.log(f"[bench] wrote {RESULTS_FILE}")
    return 0


def main(argv: list[str]) -> int:
    return benchvenv.main(__file__, argv, parse_args, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
