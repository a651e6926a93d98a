"""Live changes to a running stack: reload (a new config), scale and rolling restarts.

`LiveChanges` carries out a reload plan (`reloadplan.plan`, pure) on the daemon, and
drives the rollouts (`rollout.Rollout`) that replace changed services one replica at
a time. It acts through the `Fleet` the daemon offers (add, replace and retire
replicas; adopt a config; hold sockets), on the event loop's thread, and never waits:
the loop calls `advance` on every turn, and control requests that wait for the
result leave a waiter that asks `settled`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from procorch.config import Config, ConfigError, ServiceConfig, load_like
from procorch.supervisor import guardrails
from procorch.supervisor.process import Replica
from procorch.supervisor.reloadplan import Plan, port_collides
from procorch.supervisor.reloadplan import plan as plan_change
from procorch.supervisor.rollout import Rollout
from procorch.supervisor.sockets import BindError


class Refused(Exception):
    """The change cannot be made now; str() is one line, and nothing was changed."""


class Fleet(Protocol):
    """What live changes need of the daemon (supervisor/daemon.py)."""

    config: Config
    replicas: list[Replica]
    shutting_down: bool

    def add_replica(self, svc: ServiceConfig, index: int) -> Replica: ...
    def retire(self, r: Replica, in_order: bool = False) -> None: ...
    def adopt(self, config: Config) -> None: ...
    def hold(self, services: tuple[ServiceConfig, ...]) -> None: ...
    def release_unheld(self) -> None: ...
    def changed(self) -> None: ...
    def event(self, event: str, detail: str = "") -> None: ...


class LiveChanges:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.rollouts: list[Rollout] = []
        self.aborted: dict[str, str] = {}  # service -> why its last rollout was aborted

    # -- what is going on --------------------------------------------------------------

    def busy(self) -> str | None:
        """Why another change must wait, if one is under way."""
        rolling = [r.service.name for r in self.rollouts if not r.finished]
        if rolling:
            return f"a rolling replacement of {', '.join(rolling)} is under way"
        return None

    def settled(self, services: set[str]) -> bool:
        """No rollout of `services` runs, none of their replicas is leaving or unsettled."""
        if any(r.service.name in services and not r.finished for r in self.rollouts):
            return False
        return all(r.settled and not r.retiring for r in self.fleet.replicas if r.name in services)

    def failures(self, services: set[str]) -> list[str]:
        """Why the last rollouts of `services` were aborted, if they were."""
        return [why for name, why in self.aborted.items() if name in services]

    def advance(self) -> None:
        """Called on every turn of the event loop."""
        for rollout in self.rollouts:
            rollout.advance(self.fleet)
        for rollout in self.rollouts:
            if rollout.finished:
                if rollout.failure:
                    self.aborted[rollout.service.name] = rollout.failure
                    self._revert(rollout)
                why = f": {rollout.failure}" if rollout.failure else ""
                self.fleet.event(f"rollout-{rollout.phase.value}", rollout.service.name + why)
        self.rollouts = [r for r in self.rollouts if not r.finished]

    # -- reload ------------------------------------------------------------------------

    def reload_file(self) -> None:
        """SIGHUP: read the config file again and apply it; a bad one changes nothing."""
        try:
            new = self.from_file()
            self.apply(new, self.plan(new))
        except (ConfigError, Refused) as exc:  # one line: the event, logged as a warning
            self.fleet.event("reload-failed", str(exc))

    def from_file(self) -> Config:
        """The running config's file, read again as the daemon was started on it (its
        `--gateway`, `--token` and run directory kept); ConfigError if it is bad."""
        running = self.fleet.config
        return load_like(running, running.path)

    def plan(self, new: Config) -> Plan:
        """What changing the running stack to `new` means (changes nothing)."""
        return plan_change(self.fleet.config, new)

    def apply(self, new: Config, p: Plan) -> None:
        """Carry out `p`, the plan to `new`; Refused, with nothing changed, if it cannot
        be (a setting that cannot change live, a service the daemon cannot start as
        configured, a socket that cannot be bound)."""
        if p.refused:
            what, why = next(iter(p.refused.items()))
            raise Refused(f"{what} cannot change live ({why}): use `procorch down`, then `up`")
        if problem := guardrails.start_problem(new.services):  # as `up` checks
            raise Refused(problem)
        self._check_free()
        try:
            self.fleet.hold(new.services)  # first: a port in use changes nothing
        except BindError as exc:
            raise Refused(str(exc)) from None
        self.fleet.adopt(new)
        for name in p.removed:  # reversed start order: dependents first
            for r in self._replicas(name):
                self.fleet.retire(r, in_order=True)
        for svc in new.services:
            if svc.name in p.added:
                for i in range(svc.replicas):
                    self.fleet.add_replica(svc, i)
            elif svc.name in p.changed:
                # those kept are replaced; taken first, not the new ones a scale-up adds
                kept = [r for r in self._replicas(svc.name) if r.index < svc.replicas]
                self._resize(svc, relabel=False)
                self._roll(svc, kept, surge=svc.name in p.rolling)
            elif svc.name in p.scaled or svc.name in p.retuned:
                self._resize(svc, relabel=True)  # same processes, the new settings
        self.fleet.release_unheld()
        self.fleet.event("reload", "; ".join(_summary(p)) or "nothing changed")
        self.fleet.changed()

    def _check_free(self) -> None:
        """Refused while the daemon stops, or while another live change is under way."""
        if self.fleet.shutting_down:
            raise Refused("the supervisor is shutting down")
        busy = self.busy()
        if busy:
            raise Refused(f"{busy}: try again when it is over")

    # -- scale -------------------------------------------------------------------------

    def scale(self, counts: dict[str, int]) -> None:
        """Set services' replica counts live (until the next reload); Refused if busy."""
        self._check_free()
        services = tuple(
            replace(svc, replicas=counts[svc.name]) if svc.name in counts else svc
            for svc in self.fleet.config.services
        )
        self.fleet.adopt(replace(self.fleet.config, services=services))
        for svc in services:
            if svc.name in counts:
                self._resize(svc, relabel=True)
        self.fleet.changed()

    # -- rolling restart ---------------------------------------------------------------

    def rolling_restart(self, targets: list[Replica]) -> None:
        """Replace each of `targets`, one replica of a service at a time, surge first;
        stop first where a replacement would take its old replica's `{port}`."""
        self._check_free()
        for svc in self.fleet.config.services:
            olds = [r for r in targets if r.name == svc.name and not r.retiring]
            if olds:
                self._roll(svc, olds, surge=not port_collides(svc))
        self.fleet.changed()

    # -- the moves ---------------------------------------------------------------------

    def _replicas(self, name: str) -> list[Replica]:
        return [r for r in self.fleet.replicas if r.name == name and not r.retiring]

    def _resize(self, svc: ServiceConfig, relabel: bool) -> None:
        """`svc.replicas` replicas of `svc`: the highest-numbered ones leave, new numbers
        join with `svc`; those kept run on untouched (`relabel`: their config becomes
        `svc`, which differs from theirs in `replicas` only)."""
        for r in self._replicas(svc.name):
            if r.index >= svc.replicas:
                self.fleet.retire(r)
            elif relabel:
                r.service = svc
        have = {r.index for r in self._replicas(svc.name)}
        for i in range(svc.replicas):
            if i not in have:
                self.fleet.add_replica(svc, i)

    def _revert(self, rollout: Rollout) -> None:
        """An aborted rollout leaves old replicas running: the config the daemon says it
        runs goes back to theirs, so the next reload replaces them again."""
        if rollout.previous is None:
            return
        config = self.fleet.config
        name = rollout.service.name
        count = len(self._replicas(name))
        services = tuple(
            replace(rollout.previous, replicas=count) if svc.name == name else svc
            for svc in config.services
        )
        self.fleet.adopt(replace(config, services=services))

    def _roll(self, svc: ServiceConfig, olds: list[Replica], surge: bool) -> None:
        self.aborted.pop(svc.name, None)
        rollout = Rollout(service=svc, pending=sorted(olds, key=lambda r: r.index), surge=surge)
        rollout.begin(self.fleet)
        self.rollouts.append(rollout)


def _summary(p: Plan) -> list[str]:
    parts = []
    changes = (("added", p.added), ("removed", p.removed), ("replaced", p.changed))
    for label, names in (*changes, ("retuned", p.retuned)):
        if names:
            parts.append(f"{label} {', '.join(names)}")
    if p.scaled:
        parts.append("scaled " + ", ".join(f"{n} {a}->{b}" for n, (a, b) in p.scaled.items()))
    return parts
