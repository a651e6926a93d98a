"""The service registry: which replicas each service has, where they listen, how they are.

The supervisor publishes it: its state snapshot (`state.json` in the run directory,
rewritten atomically whenever something changes) lists every replica with its pid,
state, socket and when its current process was registered. Anyone (services, the CLI,
the gateway) looks a service up by name here, without asking the daemon.

A replica's socket path (`socket_path`) depends only on the service name and replica
number, so a restarted replica is found again at the same address: callers keep
working across restarts without being told.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from procorch.config import service_socket as socket_path
from procorch.services.protocol import NotFound, Unavailable

__all__ = ["Endpoint", "Registry", "socket_path"]


@dataclass(frozen=True)
class Endpoint:
    """One replica as the registry publishes it."""

    service: str
    replica: int
    pid: int | None
    state: str
    socket: Path | None  # None for a command service: it speaks no protocol
    registered_at: str | None  # when its current process started (UTC, ISO 8601)
    slot: int | None = None  # its slot in the shared statistics (stats.bin)
    restarts: int = 0  # since the daemon started


class Registry:
    """A reader of the published registry; rereads it only when the file changed."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._state_file = self.run_dir / "state.json"
        self._stamp: tuple[int, int] | None = None
        self._services: dict[str, list[Endpoint]] = {}

    def services(self) -> dict[str, list[Endpoint]]:
        """Every service, by its configured name, in start order."""
        try:
            st = os.stat(self._state_file)
        except FileNotFoundError:
            raise Unavailable(f"procorch has never run in {self.run_dir}") from None
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            from procorch.supervisor.rundir import BadState, RunDir

            try:
                state = RunDir(self.run_dir).read_state()
            except BadState as exc:
                # one line, and the code every caller maps already (the gateway: 503);
                # the daemon rewrites the file within a health check
                raise Unavailable(f"the registry is unreadable: {exc}") from None
            if state is None:
                raise Unavailable(f"procorch has never run in {self.run_dir}")
            services: dict[str, list[Endpoint]] = {}
            for p in state["processes"]:  # its shape is checked by read_state
                services.setdefault(p["service"], []).append(
                    Endpoint(
                        service=p["service"],
                        replica=p["replica"],
                        pid=p["pid"],
                        state=p["state"],
                        socket=Path(p["socket"]) if p.get("socket") else None,
                        registered_at=p.get("registered_at"),
                        slot=p.get("slot"),
                        restarts=p.get("restarts", 0),
                    )
                )
            self._services, self._stamp = services, stamp
        return self._services

    def lookup(self, name: str) -> list[Endpoint]:
        """The replicas of service `name` (case-insensitive); NotFound if there is none."""
        services = self.services()
        found = services.get(name)
        if found is not None:
            return found
        for known, endpoints in services.items():
            if known.lower() == name.lower():
                return endpoints
        raise NotFound(f"Service {name} not found")  # the original's words
