"""Ending processes the daemon owns but no longer tracks.

Two cases: what the services forked and left behind at shutdown (re-parented to
the daemon, a child subreaper), and what a crashed daemon left running (found by
its run token). Imported only when needed; psutil only for a crashed daemon's leftovers
(finding what is left at a shutdown reads /proc directly: nothing, nearly always).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from types import ModuleType

GRACE = 2.0  # seconds between SIGTERM and SIGKILL for a crashed daemon's leftovers


def kill_descendants() -> None:
    """SIGKILL every descendant of this process and wait until they are gone."""
    try:
        leftovers = _descendants(os.getpid())
    except FileNotFoundError:  # a kernel without /proc/PID/task/TID/children
        leftovers = None
    if leftovers is None:
        procs = _psutil().Process().children(recursive=True)
        for proc in procs:
            _quietly(proc.kill)
        _psutil().wait_procs(procs, timeout=GRACE)
        return
    # The usual case, at every shutdown: nothing is left, found in a few syscalls,
    # where psutil read the stat file of every process on the machine (and its import
    # alone took ~12 ms) to say so.
    deadline = time.monotonic() + GRACE
    while leftovers:
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in _children(os.getpid()):  # ours to reap; the others' parents die too
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        leftovers = _descendants(os.getpid())
        if not leftovers or time.monotonic() > deadline:
            return
        time.sleep(0.002)  # a killed process takes a moment to exit (and be re-parented)


def _children(pid: int) -> list[int]:
    """The children of `pid` (of every thread of it), zombies included; [] if it is gone.

    FileNotFoundError if the kernel has no /proc/PID/task/TID/children at all."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(child) for child in f.read().split())
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            raise  # no such file in this kernel (CONFIG_PROC_CHILDREN=n)
    return found


def _descendants(pid: int) -> list[int]:
    """Every descendant of `pid`, parents before their children."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        frontier = [child for parent in frontier for child in _children(parent)]
        found.extend(frontier)
    return found


def end_token_holders(token: str) -> int:
    """End every process whose environment carries PROCORCH_RUN_TOKEN=token; how many.

    A pid in a snapshot proves nothing (pids are reused, and the file could be stale
    or edited); the token, inherited by every replica and all it forks, does.
    """
    psutil = _psutil()
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


def _psutil() -> ModuleType:
    """psutil, imported only when a crashed daemon's leftovers are looked for (~12 ms)."""
    import psutil

    return psutil


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except _psutil().Error:
        pass
