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
    """SIGKILL every descendant of this process and wait until they are gone.

    This process is a subreaper (lifeline.become_subreaper): whatever a dead child
    leaves is re-parented to it."""
    try:
        children = _children()
    except FileNotFoundError:  # a kernel without /proc/PID/task/TID/children
        procs = _psutil().Process().children(recursive=True)
        for proc in procs:
            _quietly(proc.kill)
        _psutil().wait_procs(procs, timeout=GRACE)
        return
    # The usual case, at every shutdown: nothing is left, found in a few syscalls,
    # where psutil read the stat file of every process on the machine to say so (and
    # its import alone took ~12 ms). Only our own children are signalled; as a
    # subreaper we adopt each one's children when it dies: they are next, a level at
    # a time.
    deadline = time.monotonic() + GRACE
    while children:
        for pid in children:
            _kill_child(pid)
        time.sleep(0.001)  # a killed process takes a moment to exit
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            return
        children = _children()


def _kill_child(pid: int) -> None:
    """SIGKILL our child `pid`, never a stranger who took its number: another thread
    (a hook's) may reap it meanwhile. The descriptor is taken first; if `pid` is still
    our child after that, the descriptor is that child's."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if pid in _children():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)


def _children() -> list[int]:
    """This process's children (of every thread of it), zombies included.

    FileNotFoundError if the kernel has no /proc/PID/task/TID/children."""
    found: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                found.extend(int(child) for child in f.read().split())
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except FileNotFoundError:
            if os.path.exists(f"/proc/self/task/{tid}"):
                raise  # no such file in this kernel (CONFIG_PROC_CHILDREN=n)
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
