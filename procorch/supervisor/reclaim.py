"""Ending processes the daemon owns but no longer tracks.

Two cases: what the services forked and left behind at shutdown (re-parented to
the daemon, a child subreaper), and what a crashed daemon left running (found by
its run token). Imported only when needed, since psutil is not needed to start processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil

GRACE = 2.0  # seconds between SIGTERM and SIGKILL for a crashed daemon's leftovers


def kill_descendants() -> None:
    """SIGKILL every descendant of this process and wait until they are gone."""
    leftovers = psutil.Process().children(recursive=True)
    for proc in leftovers:
        _quietly(proc.kill)
    psutil.wait_procs(leftovers, timeout=GRACE)


def end_token_holders(token: str) -> int:
    """End every process whose environment carries PROCORCH_RUN_TOKEN=token; how many.

    A pid in a snapshot proves nothing (pids are reused, and the file could be stale
    or edited); the token, inherited by every replica and all it forks, does.
    """
    procs = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("PROCORCH_RUN_TOKEN") == token:
                procs.append(proc)
        except psutil.Error:
            continue
    for proc in procs:
        _quietly(proc.terminate)
    _, alive = psutil.wait_procs(procs, timeout=GRACE)
    for proc in alive:
        _quietly(proc.kill)
    return len(procs)


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except psutil.Error:
        pass
