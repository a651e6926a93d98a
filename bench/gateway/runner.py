"""Benchmark procorch's HTTP gateway against a bare Flask "hello" on the same WSGI server
(the floor) and against the originals' design (Flask's development server forwarding over
multiprocessing queues and HTTP).

    python bench/gateway --parts endpoints            # full run, about 1.5 minutes
    python bench/gateway --parts endpoints --quick    # smoke run: 2 s per endpoint, no warm-up

wrk (installed with apt-get when missing, as root) loads each endpoint for a fixed time
with one thread and as many keep-alive connections as waitress has threads, and gives
requests/s and p99. The servers (`gwpeers.py`) run one at a time, each on a free loopback
port: the bare hello (`hello.py`), then `procorch up --gateway` with the built-in stack
(GET /health, GET /users/1, GET /job/1, a pending job's GET /job/ID, POST /orders,
POST /job/100), then the original design (`original.py`) with the same endpoints but the
pending job's. Every server it started is stopped
at the end, on error and on Ctrl-C too. The script creates bench/.venv on first use and
re-runs itself with that venv's python, as the other benchmarks do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from harness import args as benchargs
from harness import venv as benchvenv
from harness.area import Figure, RunOutput, log

from gateway.plan import FULL, QUICK, Plan, Results

if TYPE_CHECKING:  # these need the venv's packages: imported after the re-exec
    from gateway.peers import Endpoint
    from gateway.wrk import Load, WrkResult

PACKAGES = ("psutil", "flask", "waitress", "requests")  # requests: the original's client
PEERS = ("hello", "procorch", "original")


def measure(
    wrk: str, peer: str, url: str, ep: Endpoint, load: Load, plan: Plan, root: Path
) -> WrkResult:
    """One endpoint: write its Lua script, warm up, then the measured run."""
    from gateway import wrk as gwwrk

    if ep.before is not None:
        ep.before()
    script = gwwrk.lua_script(root / f"{peer}-{ep.key}.lua", ep.method, ep.body)
    wrk_log = root / f"{peer}-wrk.log"
    if plan.warmup:
        warm = gwwrk.Load(load.threads, load.connections, plan.warmup)
        gwwrk.run(wrk, url, script, warm, wrk_log)
    got = gwwrk.run(wrk, url, script, load, wrk_log)
    log(
        f"[bench]   {ep.label}: {got.rps:,.0f} req/s, p50 {got.p50_ms:.2f} ms, "
        f"p99 {got.p99_ms:.2f} ms"
        + (f", {got.non2xx} non-2xx" if got.non2xx else "")
        + (f", {got.socket_errors} socket errors" if got.socket_errors else "")
    )
    return got


def schedule(names: list[str]) -> list[str]:
    """The order the servers run in: the one asked, with the hello again right after
    procorch. The machine's load drifts over a run (other work shares the cores), so the
    floor of procorch's ratios is measured on both sides of it in time, and pooled."""
    order = list(names)
    if "hello" in order and "procorch" in order:
        order.insert(order.index("procorch") + 1, "hello")
    return order


def run_peers(names: list[str], wrk: str, load: Load, plan: Plan, root: Path) -> Results:
    """Each server in turn: start, prepare, measure every endpoint, stop."""
    from gateway import peers as gwpeers

    classes = {cls.name: cls for cls in (gwpeers.Hello, gwpeers.Procorch, gwpeers.Original)}
    gwpeers.Procorch.cli = str(benchvenv.BIN_DIR / "procorch")
    peers = [classes[name]() for name in schedule(names)]
    for peer in peers:  # before any run: a missing peer fails the run at once
        if why := peer.available():
            raise gwpeers.PeerError(f"{peer.name}: {why}")
    results = Results(load=[os.getloadavg()[0]])
    for peer in peers:
        name = peer.name
        log(f"[bench] {peer.label}")
        try:
            peer.start(root)
            for ep in peer.endpoints():
                results.labels.setdefault(ep.key, ep.label)
                got = measure(wrk, name, peer.url(ep.path), ep, load, plan, root)
                results.add(name, ep.key, got)
            results.notes += [f"{peer.label}: {note}" for note in peer.notes]
        finally:
            peer.stop()
    results.load.append(os.getloadavg()[0])
    return results


def run(args: argparse.Namespace) -> RunOutput:
    # Only importable inside bench/.venv (flask, waitress, psutil), hence imported here.
    from gateway import hello as gwhello
    from gateway import peers as gwpeers
    from gateway import report as gwreport
    from gateway import wrk as gwwrk

    names = benchargs.wanted_peers(args, PEERS)
    plan = QUICK if args.quick else FULL
    # One wrk thread is plenty for a Python server and leaves it the other core; one
    # connection per waitress thread keeps every thread busy without queueing requests
    # inside waitress, so p99 is the time to serve, not the time spent waiting in line.
    load = gwwrk.Load(threads=1, connections=gwhello.THREADS, seconds=plan.seconds)
    root = Path(tempfile.mkdtemp(prefix="pgw-"))
    gwpeers.Procorch.keep_tmp = args.keep_tmp
    started = time.monotonic()
    try:
        wrk = gwwrk.ensure_wrk()
        results = run_peers(names, wrk, load, plan, root)
    except (gwwrk.WrkError, gwpeers.PeerError) as exc:
        raise RuntimeError(str(exc)) from exc
    finally:
        if args.keep_tmp:
            log(f"[bench] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results.versions["wrk"] = gwwrk.version(wrk)
    log(f"[bench] done in {time.monotonic() - started:.0f} s")
    command = "python bench/gateway --parts endpoints" + (" --quick" if args.quick else "")
    section = gwreport.render(results, plan, load, names, command)
    out = RunOutput(sections={gwreport.SECTION: section})
    for peer in names:
        for key in results.runs.get(peer, {}):
            got = results.get(peer, key)
            if got is not None:
                out.figures[f"{key} {peer} req/s"] = Figure(got.rps, "req/s", True)
                out.figures[f"{key} {peer} p99"] = Figure(got.p99_ms / 1000, "ms")
    for key in results.runs.get("procorch", {}):
        ours = results.get("procorch", key)
        for peer in ("hello", "original"):
            theirs = results.get(peer, key) or (
                results.get(peer, "hello") if peer == "hello" else None
            )
            if ours is not None and theirs is not None and theirs.rps:
                out.ratios[f"{key} req/s procorch ÷ {peer}"] = ours.rps / theirs.rps
    out.notes += results.notes
    return out
