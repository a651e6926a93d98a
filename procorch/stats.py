"""Live per-process statistics in a shared, memory-mapped file.

The daemon creates `stats.bin` in the run directory with one fixed-size slot per
replica and tells each process its slot number. A reload or scale that needs more
slots grows the file in place (`grow`): mappings of its first part stay valid, and a
reader that meets a slot beyond its mapping opens the file again. A process writes its own slot
(heartbeat, request and error counters) with plain memory stores: no lock, no
round trip. The daemon and the CLI map the same file and read every slot.

Each field is an aligned 8-byte word, so a reader never sees half a value; a
reader may see a counter one update behind, which is fine for statistics.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

SLOT_SIZE = 64
# pid, heartbeat (CLOCK_MONOTONIC seconds, 0 = none yet), requests, errors, latency sum (s)
_LAYOUT = struct.Struct("<qdqqd")
_HEARTBEAT = struct.Struct("<d")
_COUNTER = struct.Struct("<q")
_OFF_HEARTBEAT, _OFF_REQUESTS, _OFF_ERRORS, _OFF_LATENCY = 8, 16, 24, 32


@dataclass(frozen=True)
class SlotStats:
    pid: int
    heartbeat: float
    requests: int
    errors: int
    latency_total: float

    def heartbeat_age(self, now: float | None = None) -> float | None:
        if not self.heartbeat:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - self.heartbeat)


class StatsTable:
    """A view of the stats file; the daemon creates it, everyone else opens it."""

    def __init__(self, path: Path, slots: int | None = None) -> None:
        self.path = path
        if slots is not None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        else:
            fd = os.open(path, os.O_RDWR)
        try:
            if slots is not None:
                # Blocks now, not a sparse file: a page of a memory-mapped file first
                # touched on a full disk is a SIGBUS, not an error.
                os.posix_fallocate(fd, 0, max(1, slots) * SLOT_SIZE)
            self._map = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self.slots = len(self._map) // SLOT_SIZE

    def grow(self, slots: int) -> None:
        """Make room for at least `slots` slots (the daemon's; the file only ever grows)."""
        if slots <= self.slots:
            return
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, slots * SLOT_SIZE)
            bigger = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self._map.close()
        self._map = bigger
        self.slots = len(bigger) // SLOT_SIZE

    def reset(self, slot: int, pid: int) -> None:
        """Start a slot afresh for a new process."""
        _LAYOUT.pack_into(self._map, slot * SLOT_SIZE, pid, 0.0, 0, 0, 0.0)

    def read(self, slot: int) -> SlotStats:
        return SlotStats(*_LAYOUT.unpack_from(self._map, slot * SLOT_SIZE))

    def heartbeat(self, slot: int) -> None:
        _HEARTBEAT.pack_into(self._map, slot * SLOT_SIZE + _OFF_HEARTBEAT, time.monotonic())

    def count_request(self, slot: int, latency: float, error: bool = False) -> None:
        base = slot * SLOT_SIZE
        (requests,) = _COUNTER.unpack_from(self._map, base + _OFF_REQUESTS)
        _COUNTER.pack_into(self._map, base + _OFF_REQUESTS, requests + 1)
        if error:
            (errors,) = _COUNTER.unpack_from(self._map, base + _OFF_ERRORS)
            _COUNTER.pack_into(self._map, base + _OFF_ERRORS, errors + 1)
        (total,) = _HEARTBEAT.unpack_from(self._map, base + _OFF_LATENCY)
        _HEARTBEAT.pack_into(self._map, base + _OFF_LATENCY, total + latency)

    def close(self) -> None:
        self._map.close()
