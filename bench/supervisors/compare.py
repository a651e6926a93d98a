"""Benchmark procorch against supervisord and circus, side by side, on a trivial service.

    python bench/supervisors --parts compare            # full run, a few minutes
    python bench/supervisors --parts compare --quick    # smoke run: N = 4 and 50, fewer repetitions

The script creates bench/.venv on first use (supervisor, circus, psutil, and procorch
installed as a user installs it, afresh each run), then re-runs itself with that venv's
python. Each peer, at its defaults, supervises copies of bench/supervisors/sleeper.py, and
the harness measures:

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
import tempfile
import uuid
from pathlib import Path
from statistics import median

from harness import args as benchargs
from harness.area import Figure, RunOutput

UNITS = {"rss": "MiB", "cpu": "s"}  # the other metrics are times in seconds, shown in ms


def run(args: argparse.Namespace) -> RunOutput:
    # Only importable inside bench/.venv (psutil), hence imported here, after the re-exec.
    from harness import procs

    from supervisors import metrics, report
    from supervisors.peers import ALL_PEERS

    wanted = benchargs.wanted_peers(args, [p.name for p in ALL_PEERS])
    peers = [p for p in ALL_PEERS if p.name in wanted]
    plan = metrics.QUICK if args.quick else metrics.FULL
    run_id = f"pcbench-{uuid.uuid4().hex[:10]}"
    root = Path(tempfile.mkdtemp(prefix=f"{run_id}-"))
    metrics.log(f"[bench] run {run_id}, working directory {root}")
    try:
        results = metrics.Runner(peers, plan, root, run_id).run()
    finally:
        procs.kill(procs.pids_mentioning(run_id))  # daemons, children, stray commands
        if args.keep_tmp:
            metrics.log(f"[bench] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    command = "python bench/supervisors --parts compare" + (" --quick" if args.quick else "")
    out = RunOutput(sections={"supervisors-compare": report.render(results, plan, peers, command)})
    for metric, by_peer in results.samples.items():
        unit = UNITS.get(metric, "ms")
        for peer, samples in by_peer.items():
            if samples:
                out.figures[f"{metric} {peer}"] = Figure(median(samples), unit)
        ours = by_peer.get("procorch")
        for peer in ("supervisord", "circus"):
            theirs = by_peer.get(peer)
            if ours and theirs and median(theirs) > 0:
                out.ratios[f"{metric} procorch ÷ {peer}"] = median(ours) / median(theirs)
    out.notes += [f"{peer} skipped: {why}" for peer, why in results.skipped.items()]
    return out
