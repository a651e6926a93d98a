"""What the gateway talks to: the services, the registry, the live statistics, the jobs.

One `Backend` per gateway process, shared by its threads: the services `Client` is
thread-safe, the registry and the stats file are read-only views, and each thread
gets a `Jobs` connection of its own (a database connection serves one thread).

Bulkheads: calls to one service may hold at most `service_limit` of the threads at once
(see `Bulkheads`), so a hung service cannot stall the endpoints that do not use it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from procorch.config import Config, ServiceConfig
from procorch.jobs.job import TRANSITIONS, Status
from procorch.services.protocol import CallTimeout, ServiceError, Unavailable
from procorch.services.registry import Endpoint, Registry
from procorch.stats import SlotStats, StatsTable

LIVE_STATES = ("starting", "running", "stopping")


@dataclass(frozen=True)
class ReplicaView:
    """One replica as the gateway reports it: its registry entry and its live counters."""

    endpoint: Endpoint
    stats: SlotStats | None
    heartbeat_age: float | None
    alive: bool  # the process exists now, whatever the (up to 0.5 s old) snapshot says

    def public(self) -> dict[str, Any]:
        ep = self.endpoint
        return {
            "replica": ep.replica,
            "pid": ep.pid if self.alive else None,
            "status": ep.state,
            "registered_at": ep.registered_at,
            "requests": self.stats.requests if self.stats else 0,
            "errors": self.stats.errors if self.stats else 0,
            "last_heartbeat": self.heartbeat_age,
        }


class Backend:
    def __init__(self, config: Config) -> None:
        from procorch.services.client import Client

        self.config = config
        self.run_dir = config.settings.run_dir
        self.client = Client(self.run_dir, sender="Gateway", timeout=config.gateway.timeout)
        self.registry = Registry(self.run_dir)
        self._stats: StatsTable | None = None
        self._running = config  # the config the daemon runs now (see _service_config)
        self._running_stamp: int | None = None
        self._local = threading.local()
        self._finished = FinishedJobs()
        self._bulkheads = Bulkheads(config.gateway.service_limit)

    def call(
        self,
        service: str,
        action: str,
        data: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> Any:
        """A service's reply data; its refusal raises ServiceError (mapped to HTTP later),
        as does a service already holding its share of the threads (503, see Bulkheads)."""
        slots = self._bulkheads.enter(service)
        answered = False
        try:
            reply = self.client.call(service, action, data, idempotency_key=idempotency_key)
            answered = True
            return reply
        except CallTimeout:  # no answer: caught first, as it is a ServiceError too
            raise
        except ServiceError:
            answered = True  # a refusal (or no replica at all, at once): not a hang
            raise
        finally:
            slots.leave(answered)

    def job(self, job_id: int) -> dict[str, Any]:
        """The job, from the cache of finished jobs if it is there (see `FinishedJobs`)."""
        job = self._finished.get(job_id)
        if job is None:
            job = self.jobs.get(job_id)
            if self.jobs.permanent_ids:
                self._finished.keep(job)
        return job

    @property
    def jobs(self) -> Any:
        """This thread's connection to the job queue (`procorch.jobs.api.Jobs`)."""
        jobs = getattr(self._local, "jobs", None)
        if jobs is None:
            from procorch.jobs.api import Jobs

            jobs = self._local.jobs = Jobs.from_config(self.config)
        return jobs

    # -- the services' state -----------------------------------------------------------

    def services(self) -> dict[str, list[ReplicaView]]:
        """Every service's replicas, in start order, with live statistics."""
        now = time.monotonic()
        return {
            name: [self._view(ep, now) for ep in endpoints]
            for name, endpoints in self.registry.services().items()
        }

    def service(self, name: str) -> tuple[str, list[ReplicaView]]:
        """One service by name (any case): its configured name and replicas; NotFound."""
        endpoints = self.registry.lookup(name)
        now = time.monotonic()
        return endpoints[0].service, [self._view(ep, now) for ep in endpoints]

    def heartbeat_timeout(self, service: str) -> float:
        svc = self._service_config(service)
        if svc is None:
            return self.config.settings.heartbeat_timeout
        return svc.heartbeat_timeout or self.config.settings.heartbeat_timeout

    def is_python(self, service: str) -> bool:
        svc = self._service_config(service)
        return svc is not None and svc.is_python

    def _service_config(self, service: str) -> ServiceConfig | None:
        try:
            return self.running_config().service(service)
        except KeyError:
            return None

    def running_config(self) -> Config:
        """The config the daemon runs now: its config.json, read again only when a reload
        or scale has rewritten it (a stat per call, not a parse)."""
        path = self.run_dir / "config.json"
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = None
        if stamp is not None and stamp != self._running_stamp:
            try:
                self._running = Config.from_json(path.read_text())
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a file being replaced: the last one read holds meanwhile
            else:
                self._running_stamp = stamp
        return self._running

    def _view(self, ep: Endpoint, now: float) -> ReplicaView:
        stats = self._slot(ep)
        alive = ep.state in LIVE_STATES and _alive(ep.pid)
        age = stats.heartbeat_age(now) if stats and alive and stats.pid == ep.pid else None
        return ReplicaView(ep, stats, round(age, 3) if age is not None else None, alive)

    def _slot(self, ep: Endpoint) -> SlotStats | None:
        if ep.slot is None:
            return None
        if self._stats is None or ep.slot >= self._stats.slots:  # none yet, or grown by a
            try:  # reload or scale; the old map is left to readers still holding it
                self._stats = StatsTable(self.run_dir / "stats.bin")
            except OSError:
                return None
        return self._stats.read(ep.slot) if ep.slot < self._stats.slots else None


class Bulkheads:
    """At most `limit` concurrent calls per service; more wait for a slot only while the
    service is answering, and are refused (503) at once when it is not.

    Without them a hung service (SIGSTOPped, deadlocked) takes every gateway thread, one
    request at a time, each for the whole timeout, and `GET /job/1`, which never calls
    it, waited 10 s for a thread. With them it holds `limit` threads, and the rest keep
    their latency. Refusing whenever `limit` calls are in flight would refuse a healthy
    service's bursts too (100 concurrent clients, calls of a millisecond), so a call
    finding no slot waits for one, but no longer than until the oldest call in flight
    is `patience` seconds old: a service that slow is slow or hung, and is refused at
    once from then on; and not at all once a call to it has timed out, until one gets
    an answer (else each wave of timeouts would let the next calls wait again). The
    fast path (a slot free) costs about a microsecond."""

    def __init__(self, limit: int, patience: float = 0.5) -> None:
        self.limit = limit
        self.patience = patience
        self._slots: dict[str, Slots] = {}

    def enter(self, service: str) -> Slots:
        """The service's slots, one taken by this thread (`Slots.leave` gives it back);
        `Unavailable` if none came free in time."""
        slots = self._slots.get(service)
        if slots is None:  # setdefault is atomic: racing threads all get the same one
            slots = self._slots.setdefault(service, Slots(self.limit))
        if not slots.free.acquire(blocking=False):
            wait = self._wait(slots) if slots.answering else 0.0
            if not slots.free.acquire(timeout=wait):
                raise Unavailable(
                    f"{service} is busy or hung: {self.limit} requests already waiting"
                )
        slots.started[threading.get_ident()] = time.monotonic()
        return slots

    def _wait(self, slots: Slots) -> float:
        """How long a call may wait for a slot: until the oldest call in flight is
        `patience` old (list() copies the dict atomically, under the GIL)."""
        started = list(slots.started.values())
        if not started:  # the holders have not noted their start yet: it is now
            return self.patience
        return max(0.0, self.patience - (time.monotonic() - min(started)))


class Slots:
    """One service's slots: a semaphore, when each thread holding one took it, and
    whether the service's last call ended with an answer (False: it timed out)."""

    def __init__(self, limit: int) -> None:
        self.free = threading.Semaphore(limit)
        self.started: dict[int, float] = {}  # thread id -> time.monotonic() (one call each)
        self.answering = True

    def leave(self, answered: bool) -> None:
        self.answering = answered
        del self.started[threading.get_ident()]
        self.free.release()


class FinishedJobs:
    """The last finished jobs served, by id: a done or cancelled job never changes (no
    transition leaves them; a failed job may be requeued), so polling one needs no store
    read.

    The read is what a cache saves here: each SQLite call lets go of the GIL, and with
    the server's threads waiting for it every handoff costs a thread switch (measured: a
    GET of a finished job served from the store runs at 60 % of a bare hello's rate, from
    here at 95 %). Plain dict operations are atomic under the GIL, so no lock."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._jobs: dict[int, dict[str, Any]] = {}

    def get(self, job_id: int) -> dict[str, Any] | None:
        return self._jobs.get(job_id)

    def keep(self, job: dict[str, Any]) -> None:
        if TRANSITIONS[Status(job["status"])]:  # it may still change: a failed job, requeued
            return
        if len(self._jobs) >= self.size:
            self._jobs.clear()  # start again: simpler than LRU, and the store refills it
        self._jobs[job["job_id"]] = job


def _alive(pid: int | None) -> bool:
    """Whether `pid` exists: signal 0 checks without sending anything, in a microsecond.

    Zombies need no check here: the daemon reaps its children the moment they die."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but another user's: not ours, though the pid was
        return False
    return True


def health(service: str, replicas: list[ReplicaView], backend: Backend) -> str:
    """The service's health word (`health_word`), from the registry's view of it."""
    return health_word(
        [(r.alive, r.endpoint.state, r.heartbeat_age) for r in replicas],
        backend.is_python(service),
        backend.heartbeat_timeout(service),
    )


def health_word(
    replicas: list[tuple[bool, str, float | None]], python: bool, timeout: float
) -> str:
    """healthy: every replica running (and heartbeating, for Python); dead: no process at
    all; unhealthy: anything between (starting, restarting, a stale heartbeat). A replica
    is (alive, state, heartbeat age in seconds or None)."""
    if not any(alive for alive, _, _ in replicas):
        return "dead"
    for alive, state, age in replicas:
        if not alive or state != "running":
            return "unhealthy"
        if python and (age is None or age > timeout):
            return "unhealthy"
    return "healthy"


def summary(replicas: list[ReplicaView]) -> str:
    """One word for a service's replicas: their state if they agree, else `degraded`."""
    return state_word([r.endpoint.state for r in replicas])


def state_word(states: list[str]) -> str:
    """The replicas' state if they agree, else `degraded`."""
    distinct = set(states)
    return distinct.pop() if len(distinct) == 1 else "degraded"
