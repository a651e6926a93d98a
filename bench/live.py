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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import benchargs
import benchvenv

if TYPE_CHECKING:
    from metrics import Results
    from peers import Peer

PARTS = ("reload", "rolling")
PEERS = ("supervisord", "supervisord-group", "supervisord-fcgi", "circus", "procorch")
PART_PEERS = {  # a [group:] changes only a reload, an [fcgi-program:] only a socket's life
    "reload": ("supervisord", "supervisord-group", "circus", "procorch"),
    "rolling": ("supervisord", "supervisord-fcgi", "circus", "procorch"),
}


@dataclass(frozen=True)
class Plan:
    runs: int  # per peer and part


FULL = Plan(runs=3)
QUICK = Plan(runs=1)


def _parts_option(parser: argparse.ArgumentParser) -> None:
    listed = ",".join(PARTS)
    parser.add_argument(
        "--parts", default=listed, help=f"comma-separated subset of {listed} (default: all)"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    args = benchargs.parse(
        __doc__, argv, quick="one run of each peer per part", peers=PEERS, extra=_parts_option
    )
    args.parts = [part for part in args.parts.split(",") if part]
    if not args.parts or not set(args.parts) <= set(PARTS):
        raise SystemExit(f"--parts: a comma-separated subset of {','.join(PARTS)}")
    return args


class Runner:
    """Runs every part for the peers, taking turns within each run."""

    def __init__(self, peers: list[type[Peer]], plan: Plan, root: Path, run_id: str) -> None:
        from metrics import Results

        self.peers = peers
        self.plan = plan
        self.root = root
        self.run_id = run_id
        self.results: dict[str, Results] = {part: Results() for part in PARTS}

    def run(self, parts: list[str]) -> dict[str, Results]:
        for part in parts:
            names = PART_PEERS[part]
            for rep in range(self.plan.runs):
                for peer_cls in self.peers:
                    if peer_cls.name in names and peer_cls.name not in self.results[part].skipped:
                        self.session(part, peer_cls, rep)
        return self.results

    def session(self, part: str, peer_cls: type[Peer], rep: int) -> None:
        import livereload
        import liveroll
        from httpload import KINDS
        from jobpeers import free_port
        from metrics import log
        from peers import PeerError

        tag = f"{part}-{peer_cls.name}-r{rep}"
        peer = peer_cls(self.root / tag, f"{self.run_id}-{tag}")
        results = self.results[part]
        try:
            if part == "reload":
                got = livereload.measure(peer)
                for metric in ("live", "done", "returned", "restarted"):
                    results.add(metric, peer.name, getattr(got, metric))
                log(
                    f"[{peer.name}] reload: live {got.live * 1000:.0f} ms, done "
                    f"{got.done * 1000:.0f} ms, {got.restarted} untouched restarted"
                )
            else:
                got = liveroll.measure(peer, free_port())
                for kind in KINDS:
                    results.add(kind, peer.name, got.failures.get(kind, 0))
                for metric in ("non_2xx", "served", "total", "longest_gap", "returned", "replaced"):
                    results.add(metric, peer.name, getattr(got, metric))
                log(
                    f"[{peer.name}] rolling: {got.failures or 'no failures'}, {got.non_2xx} "
                    f"non-2xx, {got.served} served during {got.returned * 1000:.0f} ms"
                )
            peer.stop()
        except PeerError as exc:
            results.skipped[peer.name] = str(exc)
            log(f"[{peer.name}] {part} skipped: {exc}")
        finally:
            peer.cleanup()


def run(args: argparse.Namespace) -> int:
    # Only importable inside bench/.venv (psutil), hence imported here, after the re-exec.
    import livereport
    import procs
    import report
    from metrics import log
    from peers import ALL_PEERS, VARIANTS

    known = [*ALL_PEERS, *VARIANTS]
    wanted = benchargs.wanted_peers(args, [p.name for p in known])
    peers = [p for name in PEERS for p in known if p.name == name and name in wanted]
    plan = QUICK if args.quick else FULL
    run_id = f"pclive-{uuid.uuid4().hex[:10]}"
    root = Path(tempfile.mkdtemp(prefix=f"{run_id}-"))
    log(f"[bench] run {run_id}, working directory {root}")
    loads = [os.getloadavg()]
    benchargs.interrupt_on_sigterm()
    try:
        results = Runner(peers, plan, root, run_id).run(args.parts)
    finally:
        procs.kill(procs.pids_mentioning(run_id))  # daemons, children, stray commands
        if args.keep_tmp:
            log(f"[bench] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    loads.append(os.getloadavg())
    command = "python bench/live.py" + (" --quick" if args.quick else "")
    section = livereport.render(
        results, args.parts, [p.name for p in peers], plan.runs, loads, command
    )
    report.publish(section, livereport.SECTION, write=not args.no_write)
    return 0


def main(argv: list[str]) -> int:
    return benchvenv.main(__file__, argv, parse_args, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
