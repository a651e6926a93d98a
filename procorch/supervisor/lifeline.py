"""Linux process controls through libc: die with the supervisor, adopt orphans, trim the heap.

Kept tiny (ctypes, os, signal) because every Python replica imports it at start.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent_pid: int) -> None:
    """If the supervisor dies, this process gets SIGTERM. Survives exec.

    Python replicas call this themselves first thing; for commands it runs between
    fork and exec (a preexec_fn), which costs ~1.4 ms a spawn because Popen must
    fork instead of vfork, so Python replicas avoid that path.
    """
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
        os._exit(1)


def become_subreaper() -> None:
    """Orphans of our services are re-parented to us, so we reap them and can kill them."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def release_free_memory() -> None:
    """Hand freed heap pages back to the kernel (glibc keeps them otherwise): a smaller RSS."""
    _libc.malloc_trim(0)
