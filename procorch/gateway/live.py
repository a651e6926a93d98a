"""The dashboard's live data: the daemon's view of every replica, the job counts, and
their recent history, refreshed at most once per `REFRESH` seconds and shared.

However many dashboards are open, and however many gateway threads serve them, the
daemon is asked for its status (over the control socket) and the job store for its
counts once per refresh; every poll in between is answered from the encoded JSON kept
here. A refresh runs on the thread of the request that finds the data stale; the others
meanwhile answer with the data they have, so no request ever waits for another's.

The history (ten minutes of points a series) is most of the data, and a page polling
every second has all of it but the newest point: a poll that says since when it holds
the history (`since`, its newest point's time) gets the newest point of each series
only, from a body encoded once per refresh; the whole history is encoded only when a
page opens.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from procorch.config import ServiceConfig
from procorch.gateway.backend import Backend, health_word, state_word
from procorch.gateway.history import Histories
from procorch.services.protocol import dumps
from procorch.supervisor import control
from procorch.supervisor.rundir import RunDir

log = logging.getLogger("procorch.gateway")

REFRESH = 1.0  # seconds: the dashboards' pace, and the most the daemon is asked
STATUS_TIMEOUT = 2.0


class DaemonDown(Exception):
    """The supervisor daemon did not answer on its control socket."""


class LiveView:
    def __init__(self, backend: Backend, refresh: float = REFRESH) -> None:
        self.backend = backend
        self.refresh_every = refresh
        self.socket = RunDir(backend.run_dir).socket
        self.histories = Histories()
        self._lock = threading.Lock()
        self._due = 0.0
        # the last overview, each series with its newest point only, as a dict and encoded
        self.data: dict[str, Any] | None = None
        self.latest = b""
        self._whole: bytes | None = None  # ... with its whole history, once asked for
        self.previous = 0.0  # the time of the refresh before (the history's last but one)

    def current(self) -> LiveView:
        """This view, refreshed first if it is due and nobody else is refreshing it;
        DaemonDown if there was never any data to show."""
        if time.monotonic() >= self._due and self._lock.acquire(blocking=self.data is None):
            try:
                if time.monotonic() >= self._due:
                    self._refresh()
            finally:
                self._lock.release()
        if self.data is None:
            raise DaemonDown("the supervisor daemon does not answer")
        return self

    def expire(self) -> None:
        """Refresh at the next look: a change was just made here, and its author's page
        should show it at its next poll, not up to `refresh_every` later."""
        self._due = 0.0

    def service(self, name: str) -> dict[str, Any] | None:
        """One service's entry in the overview, by name (any case)."""
        wanted = name.lower()
        assert self.data is not None
        return next((s for s in self.data["services"] if s["name"].lower() == wanted), None)

    # -- a refresh -----------------------------------------------------------------------

    def _refresh(self) -> None:
        started = time.monotonic()
        self._due = started + self.refresh_every
        now = time.time()
        try:
            status = control.request(self.socket, {"cmd": "status"}, timeout=STATUS_TIMEOUT)
        except (OSError, control.DaemonNotRunning, control.ControlError, ValueError) as exc:
            log.warning("dashboard: the daemon did not answer: %s", exc)
            if self.data is not None:  # keep what was known, and say it is stale
                self._publish({**self.data, "daemon": {"state": "unreachable"}})
            return
        services = self._services(status["services"], now)
        jobs = self._jobs(now)
        self._publish(
            {
                "time": round(now, 3),
                "daemon": status["supervisor"],
                "warnings": warnings(status["supervisor"]["warnings"], services),
                "services": services,
                "jobs": jobs,
            }
        )
        self.histories.keep_only({s["name"] for s in services} | {"jobs"})

    def body(self, since: float | None) -> bytes:
        """The overview, encoded: its whole history, or only the newest point of each
        series for a page that holds the rest (`since`: the newest time it holds)."""
        if holds_history(since, self.previous):
            return self.latest
        with self._lock:  # no refresh adds points meanwhile
            if self._whole is None:
                assert self.data is not None
                services = [
                    {**s, "series": self.histories.public(s["name"])} for s in self.data["services"]
                ]
                jobs = self.data["jobs"] and {
                    **self.data["jobs"],
                    "series": self.histories.public("jobs"),
                }
                self._whole = dumps({**self.data, "services": services, "jobs": jobs})
            return self._whole

    def history(self, key: str, since: float | None) -> dict[str, list[Any]] | None:
        """A series whole (a service's by name, or "jobs"), or None for a page that holds
        all of it but the newest point, which the entries carry."""
        if holds_history(since, self.previous):
            return None
        with self._lock:
            return self.histories.public(key)

    def _publish(self, data: dict[str, Any]) -> None:
        if self.data is not None:
            self.previous = self.data["time"]
        self.data = data
        self._whole = None
        self.latest = dumps(data)

    def _services(self, replicas: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for r in replicas:  # the daemon lists them in start order
            by_name.setdefault(r["name"], []).append(r)
        config = self.backend.running_config()
        configs = {svc.name: svc for svc in config.services}
        default_timeout = config.settings.heartbeat_timeout
        return [
            self._service(name, group, now, configs.get(name), default_timeout)
            for name, group in by_name.items()
        ]

    def _service(
        self,
        name: str,
        group: list[dict[str, Any]],
        now: float,
        svc: ServiceConfig | None,
        default_timeout: float,
    ) -> dict[str, Any]:
        shown = [replica_entry(r) for r in group]
        rss = [r["rss_bytes"] for r in shown if r["rss_bytes"] is not None]
        series = self.histories.add(
            name,
            now,
            gauges={"rss_bytes": sum(rss) if rss else None},
            counters={"requests_per_s": sum(r["requests"] for r in shown)},
        )
        health = health_word(
            [(r["pid"] is not None, r["state"], r["heartbeat_age"]) for r in shown],
            svc is not None and svc.is_python,
            (svc and svc.heartbeat_timeout) or default_timeout,
        )
        return {
            "name": name,
            "state": state_word([r["state"] for r in shown]),
            "health": health,
            "replicas": shown,
            "series": series.newest(),
        }

    def _jobs(self, now: float) -> dict[str, Any] | None:
        try:
            stats = self.backend.jobs.stats()
        except Exception as exc:  # a down Redis must not take the services' view with it
            log.warning("dashboard: the job store did not answer: %s", exc)
            return None
        counts = stats["counts"]
        series = self.histories.add(
            "jobs",
            now,
            gauges={"pending": counts.get("pending", 0)},
            counters={"finished_per_s": counts.get("done", 0) + counts.get("failed", 0)},
        )
        return {**stats, "series": series.newest()}


REPLICA_FIELDS = (
    "replica",
    "state",
    "pid",
    "uptime",
    "restarts",
    "cpu_percent",
    "rss_bytes",
    "heartbeat_age",
    "requests",
    "errors",
    "last_exit",
)


def holds_history(since: float | None, previous: float) -> bool:
    """Whether a page whose newest point is at `since` holds every point of the history
    but the newest (taken after `previous`)."""
    return since is not None and since >= previous


def replica_entry(status: dict[str, Any]) -> dict[str, Any]:
    """A replica as the dashboard shows it: the daemon's status, without its internals
    (log offsets, socket paths)."""
    return {name: status.get(name) for name in REPLICA_FIELDS}


def warnings(daemon: list[str], services: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What needs a person: the daemon's own warnings (a full disk), FATAL replicas,
    services with no process, unhealthy ones. Errors first."""
    found = [{"level": "warning", "service": None, "message": line} for line in daemon]
    for s in services:
        for r in s["replicas"]:
            if r["state"] == "fatal":
                why = f": {r['last_exit']}" if r.get("last_exit") else ""
                message = f"{s['name']}.{r['replica']} is FATAL{why}"
                found.append({"level": "error", "service": s["name"], "message": message})
        if s["health"] == "dead" and not all(r["state"] == "stopped" for r in s["replicas"]):
            message = f"{s['name']} has no process running"
            found.append({"level": "error", "service": s["name"], "message": message})
        elif s["health"] == "unhealthy":
            message = f"{s['name']} is unhealthy ({s['state']})"
            found.append({"level": "warning", "service": s["name"], "message": message})
    return sorted(found, key=lambda w: w["level"] != "error")
