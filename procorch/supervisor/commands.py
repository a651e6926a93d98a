"""Control requests: what the CLI asks a running daemon, and how each is answered.

The daemon's event loop reads one JSON object per line from the control socket and
hands it to `Commands.handle`. Each command is one method, found by name in
`Commands.HANDLERS`; it acts through the supervisor's public methods (start, stop,
status, shutdown) and answers on the client's connection. A command that waits for
replicas to settle (start, stop, restart, wait) leaves a `Waiter`, answered by
`serve_waiters` when the loop sees a change. Live changes (reload, scale, restart
--rolling) are carried out by the daemon's `LiveChanges` (supervisor/live.py); their
waiters are done when it says the services concerned have settled.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from procorch.config import Config, ConfigError, parse_signal, replicas_problem
from procorch.supervisor import control
from procorch.supervisor.lifeline import release_free_memory
from procorch.supervisor.live import LiveChanges, Refused
from procorch.supervisor.process import Replica

PROGRESS_EVERY = 0.1  # a waiting CLI gets a progress line at most this often


class Client:
    """One control connection. Replies are small; a blocking send with a timeout is fine."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self._last_progress: Any = None

    def send(self, message: dict[str, Any]) -> None:
        self.sock.settimeout(2.0)
        try:
            self.sock.sendall(control.encode(message))
        except OSError:
            pass  # the client went away; its socket is dropped when read returns EOF
        finally:
            self.sock.setblocking(False)

    def send_progress(self, progress: dict[str, Any]) -> None:
        if progress != self._last_progress:
            self._last_progress = progress
            self.send({"progress": progress})


class Waiter:
    """A client waiting until its replicas are settled (running, stopped, exited or fatal)."""

    def __init__(self, client: Client, targets: list[Replica]) -> None:
        self.client = client
        self.targets = targets

    def settled(self) -> bool:
        return all(r.settled for r in self.targets)

    def final(self, sup: Supervisor) -> dict[str, Any]:
        """The answer once settled."""
        return sup.status(self.targets)

    def progress(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in self.targets:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
        return {"total": len(self.targets), "states": counts}


class ChangeWaiter(Waiter):
    """A client waiting until a live change to `services` is over (rollouts finished,
    replicas that leave gone, those that join settled)."""

    def __init__(
        self, client: Client, live: LiveChanges, services: set[str], extra: dict[str, Any]
    ) -> None:
        super().__init__(client, [])
        self.live = live
        self.services = services
        self.extra = extra

    def settled(self) -> bool:
        return self.live.settled(self.services)

    def final(self, sup: Supervisor) -> dict[str, Any]:
        now = [r for r in sup.replicas if r.name in self.services]
        return {**self.extra, "failures": self.live.failures(self.services), **sup.status(now)}

    def progress(self) -> dict[str, Any]:
        self.targets = [r for r in self.live.fleet.replicas if r.name in self.services]
        return super().progress()


def replicas_named(replicas: list[Replica], name: str) -> list[Replica]:
    """What a name in a command means: a whole service (case-insensitive), else one
    replica as `service.N`. A service's own name wins: names may contain dots."""
    wanted = name.lower()
    whole = [r for r in replicas if r.name.lower() == wanted]
    if whole:
        return whole
    service, _, index = wanted.rpartition(".")
    if not (index.isascii() and index.isdigit()):
        return []
    return [r for r in replicas if r.name.lower() == service and r.index == int(index)]


class Supervisor(Protocol):
    """What commands need of the daemon (supervisor/daemon.py), which imports this module."""

    config: Config
    replicas: list[Replica]
    shutting_down: bool
    live: LiveChanges

    def status(self, targets: list[Replica] | None = None) -> dict[str, Any]: ...
    def request_start(self, r: Replica, now: float, restart: bool = False) -> None: ...
    def request_stop(self, r: Replica, now: float) -> None: ...
    def changed(self) -> None: ...
    def snapshot_now(self, now: float) -> None: ...
    def shutdown(self) -> None: ...
    def reopen_logs(self) -> int: ...
    def event(
        self, event: str, detail: str = "", replica: Replica | None = None, pid: int | None = None
    ) -> None: ...


class UnknownName(ValueError):
    """A request named no service or replica of this daemon."""


class Commands:
    """The daemon's answers to control requests, and the clients still waiting for one."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.waiters: list[Waiter] = []
        self.next_progress = 0.0

    def handle(self, client: Client, message: dict[str, Any]) -> None:
        """Answer one request (a JSON object with "cmd"); raises ValueError on a bad one."""
        cmd = message.get("cmd")
        handler = self.HANDLERS.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            client.send({"ok": False, "error": f"unknown command {cmd!r}"})
            return
        try:
            targets = self.targets(message.get("names") or [])
        except UnknownName as exc:
            client.send({"ok": False, "error": str(exc), "unknown": True})
            return
        handler(self, client, message, targets)

    def targets(self, names: Any) -> list[Replica]:
        """The replicas a request's names mean, in start order; every replica for none."""
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("names must be a list of strings")
        replicas = self.sup.replicas
        unknown = [n for n in names if not replicas_named(replicas, n)]
        if unknown:
            known = ", ".join(svc.name for svc in self.sup.config.services)
            raise UnknownName(f"no service named {unknown[0]!r} (known: {known})")
        chosen = {id(r) for n in names for r in replicas_named(replicas, n)}
        return [r for r in replicas if not names or id(r) in chosen]

    # -- the commands ------------------------------------------------------------------

    def status(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        client.send({"ok": True, **self.sup.status(targets)})

    def wait(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        self.waiters.append(Waiter(client, targets))
        self.sup.changed()

    def start(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        self._act(client, message, targets, lambda r, now: self.sup.request_start(r, now))

    def restart(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        if message.get("rolling"):
            self._change(
                client,
                {r.name for r in targets},
                {},
                lambda: self.sup.live.rolling_restart(targets),
            )
            return
        self._act(
            client, message, targets, lambda r, now: self.sup.request_start(r, now, restart=True)
        )

    def stop(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        self._act(client, message, targets, self.sup.request_stop)

    def config(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        # what this daemon was given, for `up` to tell whether the file changed since
        client.send({"ok": True, "config": json.loads(self.sup.config.to_json())})

    def reload(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        """{"config": Config.to_json() data, "dry_run": bool}: the plan, and unless a
        dry run, the answer once it is carried out; refused: "refused": true. Without
        "config", the daemon's own file is read again (as SIGHUP, but answered); a bad
        file is refused with "invalid": true."""
        if "config" in message:
            new = Config.from_json(json.dumps(message["config"]))
        else:
            try:
                new = self.sup.live.from_file()
            except ConfigError as exc:
                client.send({"ok": False, "error": str(exc), "invalid": True})
                return
        p = self.sup.live.plan(new)
        if message.get("dry_run") or (p.empty and not p.refused):
            client.send({"ok": True, "plan": p.to_json(), "applied": False})
            return
        services = {*p.added, *p.removed, *p.changed, *p.scaled, *p.retuned}
        extra = {"plan": p.to_json(), "applied": True}
        self._change(client, services, extra, lambda: self.sup.live.apply(new, p))

    def scale(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        """{"counts": {"NAME": N, ...}}: each service's replicas, live."""
        counts = message["counts"]
        if not isinstance(counts, dict) or not counts:
            raise ValueError("counts must be an object of service names and numbers")
        wanted: dict[str, int] = {}
        for name, count in counts.items():
            try:
                svc = self.sup.config.service(name)
            except KeyError:
                known = ", ".join(s.name for s in self.sup.config.services)
                error = f"no service named {name!r} (known: {known})"
                client.send({"ok": False, "error": error, "unknown": True})
                return
            problem = replicas_problem(svc, count, self.sup.config.settings.run_dir)
            if problem:
                client.send({"ok": False, "error": problem})
                return
            wanted[svc.name] = count
        extra = {"scaled": wanted}
        self._change(client, set(wanted), extra, lambda: self.sup.live.scale(wanted))

    def shutdown(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        # How long the slowest service may take to stop: the client's budget for waiting.
        slowest = max((svc.stop_timeout for svc in self.sup.config.services), default=10.0)
        client.send({"ok": True, "pid": os.getpid(), "stop_timeout": slowest})
        self.sup.shutdown()

    def reopen(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        # every file, whatever names were given: logrotate moved them all
        client.send({"ok": True, "reopened": self.sup.reopen_logs()})

    def signal(self, client: Client, message: dict[str, Any], targets: list[Replica]) -> None:
        """Send a signal to each target's main process (as supervisorctl does: a gunicorn
        or nginx master reloads on HUP, where its workers would die of it), or with
        "group": true to its whole process group. Replicas without a process are listed
        as not signalled, with their state."""
        if not message.get("names"):
            raise ValueError("name at least one service or replica")
        sig = parse_signal(message.get("signal"))  # ValueError: a bad request, one line
        results = []
        for r in targets:
            sent = False
            if r.state.has_process:
                if message.get("group"):
                    sent = r.signal_group(sig)
                else:
                    sent = r.signal_leader(sig)
            if sent:  # who sent what, for whoever reads events.log later
                how = "process group" if message.get("group") else "main process"
                self.sup.event("signalled", f"{sig.name} to its {how}", replica=r, pid=r.pid)
            results.append(
                {
                    "name": r.name,
                    "replica": r.index,
                    "pid": r.pid,
                    "state": r.state.value,
                    "signalled": sent,
                }
            )
        client.send({"ok": True, "signal": sig.name, "results": results})

    HANDLERS: dict[str, Callable[[Commands, Client, dict[str, Any], list[Replica]], None]] = {
        "status": status,
        "wait": wait,
        "start": start,
        "restart": restart,
        "stop": stop,
        "config": config,
        "shutdown": shutdown,
        "reload": reload,
        "scale": scale,
        "reopen": reopen,
        "signal": signal,
    }

    def _change(
        self,
        client: Client,
        services: set[str],
        extra: dict[str, Any],
        change: Callable[[], object],
    ) -> None:
        """Make a live change; answer once `services` have settled (or it is refused)."""
        try:
            change()
        except Refused as exc:
            client.send({"ok": False, "error": str(exc), "refused": True, **extra})
            return
        self.waiters.append(ChangeWaiter(client, self.sup.live, services, extra))
        self.sup.changed()

    def _act(
        self,
        client: Client,
        message: dict[str, Any],
        targets: list[Replica],
        action: Callable[[Replica, float], None],
    ) -> None:
        """Apply `action` to each target; answer once they settle (or at once, wait=false)."""
        if self.sup.shutting_down:
            client.send({"ok": False, "error": "the supervisor is shutting down", "refused": True})
            return
        now = time.monotonic()
        for r in targets:
            action(r, now)
        self.sup.changed()
        if message.get("wait", True):
            self.wait(client, message, targets)
        else:
            client.send({"ok": True})

    # -- waiting clients ---------------------------------------------------------------

    def forget(self, client: Client) -> None:
        """A client hung up: nobody waits for its answer any more."""
        self.waiters = [w for w in self.waiters if w.client is not client]

    def serve_waiters(self, now: float) -> bool:
        """Final replies at once; progress at most every PROGRESS_EVERY s. True: progress owed."""
        pending = []
        progress_due = now >= self.next_progress
        if any(w.settled() for w in self.waiters):
            # The registry (state.json) must already say what `up` answers, for whoever
            # reads it the moment `up` returns.
            self.sup.snapshot_now(now)
        for w in self.waiters:
            if w.settled():
                w.client.send({"ok": True, **w.final(self.sup)})
            else:
                if progress_due:
                    w.client.send_progress(w.progress())
                pending.append(w)
        if progress_due:
            self.next_progress = now + PROGRESS_EVERY
        if len(pending) < len(self.waiters):
            release_free_memory()  # a burst of starts is over: give its garbage back
        self.waiters = pending
        return bool(pending) and not progress_due
