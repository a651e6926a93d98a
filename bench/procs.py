"""Finding, measuring and killing the processes a benchmark run started.

The hot polling loops (every 1-5 ms) read /proc/<pid>/cmdline directly: building a
psutil.Process per pid costs several times more, and the poller shares two cores with the
supervisor being measured. Everything off the hot path uses psutil.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable

import psutil


def pids_with_arg(arg: str) -> set[int]:
    """Live (non-zombie) processes that have `arg` as one whole command-line argument.

    A zombie's cmdline reads empty, so a killed child that is not reaped yet is not counted.
    """
    needle = b"\0" + arg.encode() + b"\0"
    found: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            found.add(int(name))
    return found


def pids_mentioning(text: str) -> set[int]:
    """Processes whose command line contains `text` anywhere (not this process)."""
    needle = text.encode()
    me = os.getpid()
    found: set[int] = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.pid != me and any(needle in part.encode() for part in cmdline):
            found.add(proc.pid)
    return found


def kill(pids: Iterable[int]) -> None:
    """SIGKILL each pid, ignoring the ones already gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def is_running(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            return False
        time.sleep(interval)
    return True


def daemon_tree(daemon_pid: int, exclude: set[int]) -> list[psutil.Process]:
    """The daemon and its descendants, less the supervised children in `exclude`.

    A supervisor that keeps helper processes pays for them here; one that keeps none is
    measured on its own pid alone.
    """
    daemon = psutil.Process(daemon_pid)
    helpers = [p for p in daemon.children(recursive=True) if p.pid not in exclude]
    return [daemon, *helpers]


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    """User + system CPU time of `procs`, summed (processes gone meanwhile count 0)."""
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def rss_bytes(procs: Iterable[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def create_time(pid: int) -> float:
    """When `pid` started (epoch seconds); now if it is already gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return time.time()
