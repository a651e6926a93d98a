"""Health checks: is a replica alive, not a zombie, heartbeating, answering its probe?

`sample` reads CPU and memory from /proc; `stale_heartbeat` judges a Python
service by the heartbeat it writes to the shared stats table; `Prober` runs the
optional tcp/http probes of command services on a small thread pool, so a slow
probe never stalls the daemon's event loop.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from procorch.config import HealthCheck
from procorch.stats import StatsTable
from procorch.supervisor.process import Replica

if TYPE_CHECKING:
    from concurrent.futures import Future


def sample(replica: Replica) -> bool:
    """Refresh CPU % and RSS; False if the process is gone or a zombie.

    One read of /proc/PID/stat gives all of it (state, CPU times, start time, RSS):
    three syscalls a replica a check round, where psutil took thirteen and ~10x the
    CPU (stat, statm, their seeks and fstats). An idle daemon spends nearly all its CPU
    here, every `check_interval`, once per replica.
    """
    pid = replica.pid
    if pid is None:
        return False
    now = time.monotonic()
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        # "pid (comm) S ppid ...": comm may hold spaces and parentheses; what follows
        # the last ")" is field 3 onwards (proc(5))
        fields = data[data.rindex(b")") + 2 :].split()
        zombie = fields[0] in (b"Z", b"X")
        used = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime
        started = int(fields[19]) / _CLK_TCK  # since boot
        rss = int(fields[21]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):  # gone (ENOENT, ESRCH) or unreadable
        return False
    if zombie:
        return False
    replica.rss_bytes = rss
    if replica.create_time is None:  # as psutil's Process.create_time(): epoch seconds
        replica.create_time = started + _boot_time()
    if replica.cpu_mark is None:  # first look: the average since the process started
        used_then, then = 0.0, now - (time.time() - replica.create_time)
    else:
        used_then, then = replica.cpu_mark
    replica.cpu_percent = round(100 * (used - used_then) / max(now - then, 1e-3), 1)
    replica.cpu_mark = (used, now)
    return True


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@functools.cache
def _boot_time() -> float:
    """When the system booted, epoch seconds (/proc/stat's btime, as psutil reads it)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    return time.time() - time.monotonic()  # CLOCK_MONOTONIC counts from boot on Linux


def stale_heartbeat(
    replica: Replica, stats: StatsTable, timeout: float, now: float
) -> float | None:
    """How long a Python replica has been silent, if longer than `timeout`; else None.

    A replica that has not yet sent its first heartbeat is measured from its start.
    """
    last = max(stats.read(replica.slot).heartbeat, replica.started)
    silent = now - last
    return silent if silent > timeout else None


def probe(check: HealthCheck) -> str | None:
    """Run one probe; None when healthy, else what went wrong."""
    try:
        if check.tcp is not None:
            with socket.create_connection((check.host, check.tcp), timeout=check.timeout):
                return None
        assert check.http is not None
        import urllib.request  # only daemons with http probes pay for it (ssl: ~8 MiB)

        with urllib.request.urlopen(check.http, timeout=check.timeout) as reply:
            return None if reply.status < 400 else f"HTTP {reply.status}"
    except OSError as exc:  # refused, timed out, HTTP 4xx/5xx (HTTPError is an OSError)
        return f"probe failed: {exc}"


class Prober:
    """Runs probes off the event loop; `done` is called back on a pool thread."""

    def __init__(self, done: Callable[[Replica, int | None, str | None], None]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe")
        self._done = done
        self._busy: set[int] = set()

    def submit(self, replica: Replica) -> None:
        """Probe `replica` unless a probe of it is still under way."""
        if replica.slot in self._busy or replica.service.health is None:
            return
        self._busy.add(replica.slot)
        pid = replica.pid
        future = self._pool.submit(probe, replica.service.health)

        def finished(f: Future) -> None:
            self._busy.discard(replica.slot)
            self._done(replica, pid, f.result())

        future.add_done_callback(finished)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
