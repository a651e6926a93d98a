"""What a process the harness starts (a server, a load generator, a caller) does first:
die with the harness. Standard library only, so scripts run by path can import it after
putting bench/ on their path (`sys.path.insert(0, <bench>)`)."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """Have the kernel kill this process if the harness dies (even by SIGKILL), and let
    Ctrl-C reach only the harness, which then cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
