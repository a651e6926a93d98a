"""Replacing a service's replicas one at a time: `restart --rolling` and a reload's
replacement of a changed service.

A `Rollout` is an explicit state machine, one replica at a time, in one of two orders:

  surge first (rolling: several replicas, or sockets the daemon holds for them):
      SURGING  --new ready-->   RETIRING  (start a replacement; once it runs, stop the old)
      SURGING  --new failed-->  ABORTED   (the replacement is stopped, the old one kept)
      RETIRING --old gone-->    SURGING   (the next replica) or DONE
  stop first (one replica that may bind its own port, which a surge would collide on):
      RETIRING --old gone-->    STARTING  (then start the replacement)
      STARTING --new settled--> RETIRING  (the next replica) or DONE

The table (`TRANSITIONS`) is the one place that says what follows what; `event` is a
pure function of what the daemon sees. The daemon's event loop calls `Rollout.advance`
on every turn and carries out the returned actions through the `Fleet` it passes in:
nothing here blocks or waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from procorch.config import ServiceConfig
from procorch.supervisor.process import Replica
from procorch.supervisor.state import ProcessState


class Phase(StrEnum):
    SURGING = "surging"  # a replacement is starting beside the old replica
    RETIRING = "retiring"  # the old replica is stopping
    STARTING = "starting"  # stop first: the replacement starts where the old one was
    DONE = "done"
    ABORTED = "aborted"


class Event(StrEnum):
    NEW_READY = "new-ready"  # the replacement is running
    NEW_FAILED = "new-failed"  # it died or gave up before it ran
    NEW_SETTLED = "new-settled"  # stop first: it ran, or gave up (nothing to go back to)
    OLD_GONE = "old-gone"  # the old replica has no process any more


class Action(StrEnum):
    START_NEW = "start-new"
    STOP_OLD = "stop-old"
    STOP_NEW = "stop-new"
    NEXT = "next"  # this replica is done: on to the next one, or finished


P, E, A = Phase, Event, Action
SURGE_FIRST: dict[tuple[Phase, Event], tuple[Phase, Action]] = {
    (P.SURGING, E.NEW_READY): (P.RETIRING, A.STOP_OLD),
    (P.SURGING, E.NEW_FAILED): (P.ABORTED, A.STOP_NEW),
    (P.RETIRING, E.OLD_GONE): (P.SURGING, A.NEXT),
}
STOP_FIRST: dict[tuple[Phase, Event], tuple[Phase, Action]] = {
    (P.RETIRING, E.OLD_GONE): (P.STARTING, A.START_NEW),
    (P.STARTING, E.NEW_SETTLED): (P.RETIRING, A.NEXT),
}
del P, E, A

_FAILED = frozenset({ProcessState.BACKOFF, ProcessState.EXITED, ProcessState.FATAL})


def event(phase: Phase, old: Replica | None, new: Replica | None) -> Event | None:
    """What has happened that the phase waits for, if anything."""
    if phase is Phase.SURGING and new is not None:
        if new.state is ProcessState.RUNNING:
            return Event.NEW_READY
        if new.state in _FAILED or (new.state is ProcessState.STOPPED and not new.want_running):
            return Event.NEW_FAILED
    elif phase is Phase.RETIRING:
        if old is None or not old.state.has_process:
            return Event.OLD_GONE
    elif phase is Phase.STARTING and new is not None and new.settled:
        return Event.NEW_SETTLED
    return None


class Fleet(Protocol):
    """What a rollout needs of the daemon."""

    def add_replacement(self, old: Replica, service: ServiceConfig, wanted: bool) -> Replica: ...
    def retire(self, r: Replica) -> None: ...


@dataclass
class Rollout:
    """One service's replicas replaced by replicas of `service`, lowest number first."""

    service: ServiceConfig
    pending: list[Replica]  # old replicas still to replace, in order
    surge: bool  # surge first (rolling) or stop first
    phase: Phase = Phase.DONE
    old: Replica | None = None
    new: Replica | None = None
    wanted: bool = True  # whether the replica being replaced was to run (not `stop`ped)
    previous: ServiceConfig | None = None  # the old replicas' config (first of `pending`)
    failure: str | None = None  # why it was aborted
    replaced: list[Replica] = field(default_factory=list)  # the replacements, in order

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.ABORTED)

    @property
    def table(self) -> dict[tuple[Phase, Event], tuple[Phase, Action]]:
        return SURGE_FIRST if self.surge else STOP_FIRST

    def begin(self, fleet: Fleet) -> None:
        self.previous = self.pending[0].service if self.pending else None
        self._next(fleet)

    def advance(self, fleet: Fleet) -> None:
        """Take every step that what the daemon sees now allows."""
        while not self.finished:
            happened = event(self.phase, self.old, self.new)
            if happened is None:
                return
            self.phase, action = self.table[(self.phase, happened)]
            if action is Action.STOP_OLD:
                assert self.old is not None
                fleet.retire(self.old)
            elif action is Action.START_NEW:
                assert self.old is not None
                self.new = fleet.add_replacement(self.old, self.service, self.wanted)
                self.replaced.append(self.new)
            elif action is Action.STOP_NEW:
                assert self.new is not None
                why = self.new.last_exit or "stopped"
                state = self.new.state.value
                self.failure = f"{self.new.label}: its replacement is {state} ({why})"
                fleet.retire(self.new)
            else:
                self._next(fleet)

    def _next(self, fleet: Fleet) -> None:
        while self.pending and not self.pending[0].state.has_process:
            # stopped (as asked), exited or fatal: nothing serves, nothing to wait for
            idle = self.pending.pop(0)
            self.replaced.append(fleet.add_replacement(idle, self.service, idle.want_running))
            fleet.retire(idle)
        if not self.pending:
            self.phase = Phase.DONE
            self.old = self.new = None
            return
        self.old, self.new = self.pending.pop(0), None
        self.wanted = self.old.want_running
        if self.surge:
            self.phase = Phase.SURGING
            self.new = fleet.add_replacement(self.old, self.service, self.wanted)
            self.replaced.append(self.new)
        else:
            self.phase = Phase.RETIRING
            fleet.retire(self.old)
