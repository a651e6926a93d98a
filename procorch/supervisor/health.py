"""Health checks: is a replica alive, not a zombie, heartbeating, answering its probe?

`sample` reads CPU and memory from /proc; `stale_heartbeat` judges a Python
service by the heartbeat it writes to the shared stats table; `Prober` runs the
optional tcp/http probes of command services: a tcp connect to an address in numbers
on the event loop itself, non-blocking, anything that may block on a small thread
pool, so a slow probe never stalls the loop.
"""

from __future__ import annotations

import errno
import functools
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from procorch.config import HealthCheck
from procorch.stats import StatsTable
from procorch.supervisor.process import Replica

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor


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


_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s


def numeric_family(host: str) -> int | None:
    """The address family of a host written in numbers (127.0.0.1, ::1); None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return family
        except OSError:
            continue
    return None


def connect_problem(error: int) -> str | None:
    """What a tcp probe's connect said, as `probe` words it: None when it connected."""
    return None if error == 0 else f"probe failed: {OSError(error, os.strerror(error))}"


class Prober:
    """Runs probes without stalling the event loop.

    A tcp probe of an address in numbers (the default, 127.0.0.1) is a non-blocking
    connect made on the loop itself: on loopback the kernel answers at once, connected
    or refused, in three syscalls, where a pool thread cost ~90 µs a probe in handoffs
    and wake-ups (most of an idle daemon's CPU with probed services). A connect still
    under way is watched by the loop's selector until it ends or times out (`expire`).
    A name to resolve (which may block) and http probes run on a small thread pool.
    `done(replica, pid, problem)` is called on the loop or on a pool thread.
    """

    def __init__(
        self,
        done: Callable[[Replica, int | None, str | None], None],
        selector: selectors.BaseSelector,
    ) -> None:
        self._done = done
        self._selector = selector
        self._pool: ThreadPoolExecutor | None = None
        self._busy: set[int] = set()
        # a connect under way: its socket -> (replica, pid, deadline)
        self._connecting: dict[socket.socket, tuple[Replica, int | None, float]] = {}

    def submit(self, replica: Replica) -> None:
        """Probe `replica` unless a probe of it is still under way."""
        check = replica.service.health
        if replica.slot in self._busy or check is None:
            return
        self._busy.add(replica.slot)
        family = numeric_family(check.host) if check.tcp is not None else None
        if family is not None:
            self._connect(replica, check, family)
        else:
            self._on_pool(replica, check)

    def _connect(self, replica: Replica, check: HealthCheck, family: int) -> None:
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        # Closed with a reset, not a FIN, as HAProxy ends its checks: no TIME_WAIT left
        # behind for each probe, and less work for both ends.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        error = sock.connect_ex((check.host, check.tcp))
        if error in (errno.EINPROGRESS, errno.EAGAIN):
            deadline = time.monotonic() + check.timeout
            self._connecting[sock] = (replica, replica.pid, deadline)
            self._selector.register(sock, selectors.EVENT_WRITE, self._connected)
            return
        sock.close()
        self._finish(replica, replica.pid, connect_problem(error))

    def _connected(self, key: selectors.SelectorKey) -> None:
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        replica, pid, _ = self._drop(sock)
        self._finish(replica, pid, connect_problem(error))

    def _drop(self, sock: socket.socket) -> tuple[Replica, int | None, float]:
        self._selector.unregister(sock)
        sock.close()
        return self._connecting.pop(sock)

    def next_deadline(self) -> float | None:
        """When the oldest connect under way times out, if one is."""
        return min((deadline for _, _, deadline in self._connecting.values()), default=None)

    def expire(self, now: float) -> None:
        """End the connects that have taken longer than their probe's timeout."""
        for sock, (_, _, deadline) in list(self._connecting.items()):
            if now >= deadline:
                replica, pid, _ = self._drop(sock)
                self._finish(replica, pid, "probe failed: timed out")

    def _finish(self, replica: Replica, pid: int | None, problem: str | None) -> None:
        self._busy.discard(replica.slot)
        self._done(replica, pid, problem)

    def _on_pool(self, replica: Replica, check: HealthCheck) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe")
        pid = replica.pid
        future = self._pool.submit(probe, check)
        future.add_done_callback(lambda f: self._finish(replica, pid, f.result()))

    def shutdown(self) -> None:
        for sock in list(self._connecting):
            self._drop(sock)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
