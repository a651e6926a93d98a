"""The base class of a Python service, and the context the supervisor hands it.

A service subclasses `Service` and overrides `setup`, `tick` and `teardown` as it
needs. The supervisor runs each replica in its own process (see `__main__`). The
main loop heartbeats between ticks, so a replica whose loop hangs stops
heartbeating and is restarted: the heartbeat proves the loop runs, not just the process.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from procorch.config import Config
from procorch.stats import StatsTable


@dataclass(frozen=True)
class ServiceContext:
    """Where a replica is: handed over by the supervisor through the environment."""

    name: str
    replica: int
    run_dir: Path
    slot: int
    heartbeat_interval: float

    @classmethod
    def from_environ(cls) -> ServiceContext:
        env = os.environ
        return cls(
            name=env["PROCORCH_SERVICE"],
            replica=int(env.get("PROCORCH_REPLICA", "0")),
            run_dir=Path(env["PROCORCH_RUN_DIR"]),
            slot=int(env["PROCORCH_SLOT"]),
            heartbeat_interval=float(env.get("PROCORCH_HEARTBEAT_INTERVAL", "1.0")),
        )

    @functools.cached_property
    def config(self) -> Config:
        """The daemon's resolved configuration (it writes `config.json` before any start)."""
        return Config.from_json((self.run_dir / "config.json").read_text())


class Service:
    """Subclass me. `tick` runs every `tick_interval` seconds (None: only heartbeats)."""

    tick_interval: float | None = None

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.stats = StatsTable(context.run_dir / "stats.bin")
        self._stopping = threading.Event()

    # -- for subclasses ------------------------------------------------------------

    def setup(self) -> None:
        """Open resources; runs once before the first heartbeat (the replica is not ready yet)."""

    def tick(self) -> None:
        """Periodic work."""

    def teardown(self) -> None:
        """Close resources; runs once after a stop signal."""

    # -- the loop --------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def heartbeat(self) -> None:
        self.stats.heartbeat(self.context.slot)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def serve(self) -> None:
        """Run until SIGTERM or SIGINT; the first heartbeat tells the supervisor we are ready."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        self.setup()
        try:
            self.run()
        finally:
            self.teardown()

    def run(self) -> None:
        """The main loop: heartbeat and tick until stopped.

        A subclass with a loop of its own overrides this; it must call `heartbeat()` at
        least every `context.heartbeat_interval` seconds and return once `stopping`.
        """
        interval = self.context.heartbeat_interval
        if self.tick_interval is not None:
            interval = min(interval, self.tick_interval)
        while not self._stopping.is_set():
            self.heartbeat()
            if self.tick_interval is not None:
                self.tick()
            self._stopping.wait(interval)
