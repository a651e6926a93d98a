"""Finding, measuring and killing the processes a benchmark run started.

The hot polling loops (every 1-5 ms) read /proc/<pid>/cmdline directly: building a
psutil.Process per pid costs several times more, and the poller shares two cores with the
supervisor being measured. Everything off the hot path uses psutil.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil


def pids_with_arg(arg: str) -> set[int]:
    """Live (non-zombie) processes that have `arg` as one whole command-line argument.

    A zombie's cmdline reads empty, so a killed child that is not reaped yet is not counted.
    """
    return set(cmdlines_with_arg(arg))


def cmdlines_with_arg(arg: str) -> dict[int, list[str]]:
    """The command lines (argv) of the live processes that have `arg` as one argument."""
    needle = b"\0" + arg.encode() + b"\0"
    found: dict[int, list[str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            found[int(name)] = cmdline.decode(errors="replace").split("\0")[:-1]
    return found


def environ(pid: int) -> dict[str, str]:
    """The environment `pid` was started with ({} if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


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


def pids_in(directory: Path) -> set[int]:
    """Processes whose working directory is `directory` or below it (not this process)."""
    me = os.getpid()
    found: set[int] = set()
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info["cwd"]
        if proc.pid != me and cwd and Path(cwd).is_relative_to(directory):
            found.add(proc.pid)
    return found


def kill(pids: Iterable[int]) -> None:
    """SIGKILL each pid, ignoring the ones already gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with start_new_session=True, and all it forked; reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
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


@dataclass(frozen=True)
class CpuSample:
    """One process's CPU time: per thread in ns (schedstat), and in clock ticks (psutil)."""

    threads: dict[int, int]  # thread id -> ns on CPU; empty if schedstat is unreadable
    ticks: float  # user + system seconds, 10 ms resolution, dead threads included


def _thread_ns(pid: int) -> dict[int, int]:
    try:
        threads = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                threads[int(tid)] = int(f.read().split()[0])
        return threads
    except (OSError, ValueError, IndexError):
        return {}


def cpu_snapshot(procs: Iterable[psutil.Process]) -> dict[int, CpuSample]:
    """CPU time of each of `procs` now (processes already gone are left out)."""
    samples = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        samples[proc.pid] = CpuSample(_thread_ns(proc.pid), times.user + times.system)
    return samples


def cpu_seconds_between(before: dict[int, CpuSample], after: dict[int, CpuSample]) -> float:
    """CPU seconds used between two snapshots, by the processes present in both.

    Nanosecond schedstat figures when a process kept the same threads throughout; the
    clock-tick figure otherwise, since the time of a thread that exited is lost from
    schedstat.
    """
    total = 0.0
    for pid, start in before.items():
        end = after.get(pid)
        if end is None:
            continue
        if start.threads and start.threads.keys() == end.threads.keys():
            total += (sum(end.threads.values()) - sum(start.threads.values())) / 1e9
        else:
            total += end.ticks - start.ticks
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
