"""Benchmark live operations: procorch vs supervisord vs circus, side by side.

    python bench/supervisors --parts live-reload,live-rolling            # 3 runs
    python bench/supervisors --parts live-reload,live-rolling --quick    # 1 run

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

Same venv and re-exec as bench/supervisors/compare.py. Each run of each peer gets a fresh
temporary directory, and everything a run started is killed at the end, on error and on
Ctrl-C too. A peer whose command fails (procorch while `reload` or `restart --rolling` is
being written, say) is skipped for that part with a note.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from statistics import median

from harness import args as benchargs
from harness.area import Figure, RunOutput

PEERS = ("supervisord", "supervisord-group", "supervisord-fcgi", "circus", "procorch")
PART_PEERS = {  # a [group:] changes only a reload, an [fcgi-program:] only a socket's life
    "reload": ("supervisord", "supervisord-group", "circus", "procorch"),
    "rolling": ("supervisord", "supervisord-fcgi", "circus", "procorch"),
}
PARTS = tuple(PART_PEERS)
TIMES = ("live", "done", "returned", "longest_gap", "gap_before", "replaced")  # seconds


def run(args: argparse.Namespace, part: str) -> RunOutput:
    """One run of `part` (reload or rolling) for every peer, in turn."""
    # Only importable inside bench/.venv (psutil), hence imported here, after the re-exec.
    from harness import procs

    from supervisors import livereport, liverun
    from supervisors.httpload import KINDS
    from supervisors.metrics import log

    wanted = benchargs.wanted_peers(args, PEERS)
    part_peers = {part: [name for name in PART_PEERS[part] if name in wanted]}
    run_id = f"pclive-{uuid.uuid4().hex[:10]}"
    root = Path(tempfile.mkdtemp(prefix=f"{run_id}-"))
    log(f"[bench] run {run_id}, working directory {root}")
    loads = [os.getloadavg()]
    try:
        results = liverun.Runner(1, root, run_id).run(part_peers)[part]
    finally:
        procs.kill(procs.pids_mentioning(run_id) | procs.pids_in(root))  # whatever is left
        if args.keep_tmp:
            log(f"[bench] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    loads.append(os.getloadavg())
    command = f"python bench/supervisors --parts live-{part}" + (" --quick" if args.quick else "")
    peers = part_peers[part]
    section = livereport.render(part, results, peers, 1, loads, command)
    out = RunOutput(sections={livereport.SECTION.format(part=part): section})
    for metric, by_peer in results.samples.items():
        for peer, samples in by_peer.items():
            if samples:
                unit = "ms" if metric in TIMES else "count"
                out.figures[f"{part} {metric} {peer}"] = Figure(median(samples), unit)
    failed = {
        peer: sum(median(results.get(kind, peer)) for kind in KINDS if results.get(kind, peer))
        for peer in peers
    }
    if part == "rolling":
        for peer, count in failed.items():
            out.figures[f"rolling failed connections {peer}"] = Figure(count, "count")
    for label, metric in livereport.RATIOS[part].items():
        ours = results.get(metric, "procorch")
        for peer in peers:
            theirs = results.get(metric, peer)
            if peer != "procorch" and ours and theirs and median(theirs) > 0:
                out.ratios[f"{part} {label}, procorch ÷ {peer}"] = median(ours) / median(theirs)
    out.notes += [f"{part}: {peer} skipped: {why}" for peer, why in results.skipped.items()]
    return out
