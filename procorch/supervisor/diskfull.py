"""A run directory that refuses writes (a full disk): noticed, reported, survived.

The daemon writes four kinds of file: the snapshot (state.json), the event log, its
own log and the services' output logs. When the disk is full, each write fails with
ENOSPC; none of them is worth a dead daemon and, with it, every service. So a failed
write is recorded here instead of raised: what could not be written, since when, how
many bytes of output and how many events were dropped. `status` shows the warning
while it lasts; the daemon retries its snapshot every `RETRY` seconds, and the first
one that succeeds ends the condition (the `disk-ok` event).
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field

from procorch.sizes import format_size

RETRY = 1.0  # seconds between snapshot attempts while the disk refuses writes
PENDING_EVENTS = 1000  # events kept in memory while events.log cannot take them
HEADROOM = 256 * 1024  # free bytes a successful snapshot must also see to end it: no
# flapping while a chatty service's log takes each page as soon as it is freed


def why(exc: OSError) -> str:
    """A short reason: "disk full" for ENOSPC and EDQUOT, else the system's words."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return exc.strerror or str(exc)


@dataclass
class DiskWatch:
    """Whether writes to the run directory are failing, and what that has cost so far."""

    reason: str | None = None  # None: writes succeed
    since: float = 0.0  # monotonic
    since_wall: str = ""  # HH:MM:SS UTC, for the warning
    files: list[str] = field(default_factory=list)  # what could not be written, in order
    dropped_bytes: int = 0  # service output thrown away
    lost_events: int = 0  # events that did not fit in memory either

    @property
    def failing(self) -> bool:
        return self.reason is not None

    def refused(self, what: str, exc: OSError, dropped: int = 0) -> bool:
        """A write of `what` failed; True if this starts the condition (say so once)."""
        self.dropped_bytes += dropped
        if what not in self.files:
            self.files.append(what)
        if self.reason is not None:
            return False
        self.reason = why(exc)
        self.since = time.monotonic()
        self.since_wall = time.strftime("%H:%M:%S", time.gmtime())
        return True

    def recovered(self) -> str:
        """Writes succeed again: end the condition; returns what it cost, in one line."""
        took = time.monotonic() - self.since
        summary = (
            f"writes succeed again after {took:.1f}s ({self.reason}); "
            f"dropped {format_size(self.dropped_bytes)} of service output"
        )
        if self.lost_events:
            summary += f" and {self.lost_events} events"
        self.reason, self.files = None, []
        self.dropped_bytes = self.lost_events = 0
        return summary

    def warnings(self) -> list[str]:
        """For `status`: one line while writes fail, else none."""
        if self.reason is None:
            return []
        line = f"{self.reason}: cannot write {', '.join(self.files)} since {self.since_wall} UTC"
        if self.dropped_bytes:
            line += f" ({format_size(self.dropped_bytes)} of service output dropped)"
        return [line]
