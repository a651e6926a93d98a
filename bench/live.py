"""Benchmark live operations: procorch vs supervisord vs circus, side by side.

    python bench/live.py            # full run, about 4 minutes; updates bench/RESULTS.md
    python bench/live.py --quick    # smoke run: one run of each peer per part

1. reload (`livereload.py`): a stack of 50 sleepers; one edit (one program's environment
   changed, one program added, one removed) applied live with `procorch reload`,
   `supervisorctl reread` + `update` (the programs as 50 `[program:]`s, and again in one
   `[group:]`), `circusctl reloadconfig`. Time until the change is live, and how many of
   the 48 untouched programs were restarted all the same. Median and range of 3 runs.
2. rolling (`liveroll.py`): a 2-copy HTTP service under continuous load, restarted with
   `procorch restart --rolling web` (a socket procorch holds), `supervisorctl restart web:*`
   (each copy binds the port with SO_REUSEPORT), `circusctl restart web` (a socket circus
   holds). Failed connections, non-2xx replies, replies served during the restart, and
   its duration; 3 runs.

Same venv and re-exec as bench/supervisors.py. Each run of each peer gets a fresh
temporary directory, and everything a run started is killed at the end, on error and on
Ctrl-C too. A peer whose command fails (procorch while `reload` or `restart --rolling` is
being written, say) is skipped for that part with a note.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import benchargs
import benchvenv

PEERS = ("supervisord", "supervisord-group", "supervisord-fcgi", "circus", "procorch")
PART_PEERS = {  # a [group:] changes only a reload, an [fcgi-program:] only a socket's life
    "reload": ("supervisord", "supervisord-group", "circus", "procorch"),
    "rolling": ("supervisord", "supervisord-fcgi", "circus", "procorch"),
}
PARTS = tuple(PART_PEERS)
RUNS, QUICK_RUNS = 3, 1  # per peer and part


def _parts(text: str) -> list[str]:
    parts = [part for part in text.split(",") if part]
    if not parts or not set(parts) <= set(PARTS):
        raise argparse.ArgumentTypeError(f"a comma-separated subset of {','.join(PARTS)}")
    return parts


def _parts_option(parser: argparse.ArgumentParser) -> None:
    listed = ",".join(PARTS)
    parser.add_argument(
        "--parts",
        type=_parts,
        default=list(PARTS),
        help=f"comma-separated subset of {listed} (default: all)",
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    return benchargs.parse(
        __doc__, argv, quick="one run of each peer per part", peers=PEERS, extra=_parts_option
    )


def run(args: argparse.Namespace) -> int:
    # Only importable inside bench/.venv (psutil), hence imported here, after the re-exec.
    import livereport
    import liverun
    import procs
    import report
    from metrics import log

    wanted = benchargs.wanted_peers(args, PEERS)
    part_peers = {
        part: [name for name in PART_PEERS[part] if name in wanted] for part in args.parts
    }
    runs = QUICK_RUNS if args.quick else RUNS
    run_id = f"pclive-{uuid.uuid4().hex[:10]}"
    root = Path(tempfile.mkdtemp(prefix=f"{run_id}-"))
    log(f"[bench] run {run_id}, working directory {root}")
    loads = [os.getloadavg()]
    benchargs.interrupt_on_sigterm()
    try:
        results = liverun.Runner(runs, root, run_id).run(part_peers)
    finally:
        procs.kill(procs.pids_mentioning(run_id) | procs.pids_in(root))  # whatever is left
        if args.keep_tmp:
            log(f"[bench] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    loads.append(os.getloadavg())
    command = "python bench/live.py" + (" --quick" if args.quick else "")
    if args.parts != list(PARTS):
        command += f" --parts {','.join(args.parts)}"
    for part, peers in part_peers.items():
        section = livereport.render(part, results[part], peers, runs, loads, command)
        report.publish(section, livereport.SECTION.format(part=part), write=not args.no_write)
    return 0


def main(argv: list[str]) -> int:
    return benchvenv.main(__file__, argv, parse_args, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
