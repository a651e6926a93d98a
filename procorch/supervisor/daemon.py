"""The supervisor daemon: starts every replica, notices each death at once, restarts by policy.

One thread runs one event loop (selectors/epoll) over: the signal wake-up pipe
(SIGCHLD means "reap now", SIGTERM/SIGINT mean "shut down", SIGHUP "reload the
config file"), every child's output pipe, and the control socket. Timers (backoff,
stop timeouts, readiness, health checks) are deadlines the loop sleeps until;
nothing sleeps in a polling loop. Replicas join and leave a running stack (reload,
scale, rollouts: see live.py) through the methods under "replicas joining and leaving".
"""

from __future__ import annotations

import json
import logging
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from procorch.config import GATEWAY, Config, ServiceConfig, exit_note, service_socket
from procorch.stats import StatsTable
from procorch.supervisor import control, diskfull, guardrails, sdnotify
from procorch.supervisor.commands import Client, Commands
from procorch.supervisor.health import Prober, sample, stale_heartbeat
from procorch.supervisor.hooks import HOOK_EVENTS_REPORTED, Hooks
from procorch.supervisor.lifeline import become_subreaper
from procorch.supervisor.live import LiveChanges
from procorch.supervisor.logs import (
    DaemonLogHandler,
    Echo,
    RotatingLog,
    reopen_fd,
    wants_colour,
)
from procorch.supervisor.policy import (
    STABLE_AFTER,
    Limits,
    Verdict,
    after_death,
    fatal_retry_at,
)
from procorch.supervisor.process import (
    OUTPUT_HEAD,
    Replica,
    exec_failure,
    exited_cleanly,
    spawn_failure,
)
from procorch.supervisor.reloadplan import dependents
from procorch.supervisor.rundir import RunDir, now_iso
from procorch.supervisor.sockets import (
    LISTEN_FD_ENV,
    BindError,
    bind_address,
    bind_tcp,
    gateway_expected,
    handoff_env,
    release_address,
    unavailable_response,
)
from procorch.supervisor.state import ProcessState as S

log = logging.getLogger("procorch.daemon")

READY_POLL = 0.01  # how often a STARTING Python replica is checked for its first heartbeat
PROBE_RETRY = 0.1  # how often a STARTING command is probed until it answers
SNAPSHOT_EVERY = 0.5  # state.json is rewritten at most this often (a rename costs ~0.3 ms)
# events logged as warnings (events.log has all)
PROBLEMS = frozenset(
    {"fatal", "unhealthy", "stop-timeout", "reclaimed", "disk-full", "disk-ok"}
    | {"reload-failed", "rollout-aborted"}
    | set(HOOK_EVENTS_REPORTED)
)
LINGER = 1.0  # seconds a 503 answered for the gateway waits for its client to hang up
MAX_LINGERING = 64  # such connections at most; the oldest is closed for a new one
DRAIN_READS = 16  # at a death, read at most this many chunks (64 KiB each) of its output


class StartError(Exception):
    """The daemon cannot start; str() is one line for the user."""


class AlreadyRunning(StartError):
    """Another daemon holds this run directory's lock."""

    def __str__(self) -> str:
        return "already running"


class Supervisor:
    def __init__(self, config: Config, foreground: bool = False) -> None:
        self.config = config
        self.settings = config.settings
        self.rundir = RunDir(self.settings.run_dir)
        self.foreground = foreground
        self.token = os.urandom(8).hex()
        self.replicas: list[Replica] = []
        self._slot_owner: dict[int, Replica] = {}  # stats slot -> its replica
        self._free_slots: list[int] = []  # of replicas that left (reload, scale, rollout)
        for svc in config.services:
            for i in range(svc.replicas):
                self.replicas.append(self._new_replica(svc, i))
        self._dependents = dependents(config.services)
        self._held: dict[str, socket.socket] = {}  # `listen` address -> its socket
        self.live = LiveChanges(self)
        self._selector = selectors.DefaultSelector()
        self._by_pid: dict[int, Replica] = {}
        self._logs: dict[int, RotatingLog] = {}
        self._pipes: dict[int, int] = {}  # slot -> read end of its current process's output
        self._echo: dict[int, Echo] = {}
        self._colour = False  # --foreground on a terminal without NO_COLOR
        self.commands = Commands(self)
        self._probe_results: list[tuple[Replica, int | None, str | None]] = []
        self._loop_thread = threading.get_ident()  # the one that built it runs the loop
        self._prober: Prober | None = None
        self.shutting_down = False
        self.started = time.monotonic()
        self._next_check = 0.0
        self._limits = Limits(
            self.settings.max_restarts, self.settings.restart_window, self.settings.backoff_max
        )
        self._dirty = True  # something changed: waiters and the snapshot may be due
        self._snapshot_due = True
        self._next_snapshot = 0.0
        self._snapshot_stamp: tuple[int, ...] | None = None  # state.json as we last wrote it
        self.disk = diskfull.DiskWatch()  # whether the run directory refuses writes
        self._pending_events: deque[str] = deque()  # lines events.log could not take yet
        self._gateways = [r for r in self.replicas if r.service.module == GATEWAY]
        self._to_stop_in_order: list[Replica] = []  # removed services: dependents first
        self._standing_in = False  # the daemon answers the gateway's port itself
        self._lingering: dict[socket.socket, float] = {}  # answered: closing when they do
        self._waiters_due = False  # a change not yet told to a waiting CLI
        self._err_logs: dict[int, RotatingLog] = {}  # slot -> its stderr, if "separate"
        self._err_pipes: dict[int, int] = {}  # slot -> read end of its stderr pipe
        self._err_echo: dict[int, Echo] = {}
        self.daemon_log_fd: int | None = None  # daemon.log, when detached (reopened with logs)
        hook_env = {
            **os.environ,
            "PROCORCH_RUN_DIR": str(self.rundir.path),
            "PROCORCH_RUN_TOKEN": self.token,  # a crashed daemon's hooks are reclaimed too
        }
        self.hooks = Hooks(
            config.hooks, self.rundir.path / "hooks.log", hook_env, self.settings.log_max_bytes
        )

    # == the life of the daemon ==================================================

    def prepare(self) -> None:
        """Take the run directory: lock, reclaim a crashed daemon's leftovers, open files."""
        # Whatever the daemon and its Python services create in the run directory is
        # owner-only from its first instant (each explicit mode is a second guard).
        # Commands get the umask procorch was started with back: their files are theirs.
        self._user_umask = os.umask(0o077)
        problem = guardrails.start_problem(self.config.services)
        if problem:
            raise StartError(problem)
        self.rundir.create()
        if not self.rundir.acquire_lock():
            raise AlreadyRunning(str(self.rundir.path))
        self._events = self.rundir.open_events()
        self._reclaim_stale()  # first: a crashed daemon's gateway may still hold the port
        self._listener: socket.socket | None = None
        if self.config.gateway.enabled:
            gateway = self.config.gateway
            try:
                self._listener = bind_tcp(gateway.host, gateway.port)
                # the daemon may accept on it (see _on_http); waitress, which
                # shares it, makes it non-blocking anyway
                self._listener.setblocking(False)
            except BindError as exc:
                raise StartError(str(exc)) from None
        try:
            self.hold(self.config.services)
        except BindError as exc:
            raise StartError(str(exc)) from None
        self.rundir.write_atomic(self.rundir.pid_file, f"{os.getpid()}\n")
        self._write_snapshot()  # the run token is on disk before any process exists
        self.rundir.write_atomic(self.rundir.config_file, self.config.to_json())
        # room to grow: a reload or scale takes spare slots before the file must grow
        self.stats = StatsTable(self.rundir.stats_file, slots=2 * len(self.replicas) + 16)
        self._listen()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
            signal.signal(sig, _note_signal)
        become_subreaper()
        _raise_fd_limit()
        if any(r.service.health for r in self.replicas):
            self._prober = Prober(self._probe_done, self._selector)
        if self.foreground:
            self._echo_width = max((len(r.label) for r in self.replicas), default=8)
            self._colour = wants_colour(sys.stdout.buffer)
        for r in self.replicas:
            self._open_io(r)
        self._scheduler = None
        if self.config.jobs.schedules:  # imported only then: the daemon's start stays cheap
            from procorch.jobs.scheduler import Scheduler

            self._scheduler = Scheduler.from_config(self.config)
            on_report = partial(self._reported, self._scheduler)
            self._selector.register(self._scheduler.fileno(), selectors.EVENT_READ, on_report)
            self._scheduler.start()
        self._event(None, "daemon-start", detail=f"{len(self.replicas)} processes")

    def _open_logs(self, r: Replica) -> None:
        """The log file(s) of a replica: its output, and its stderr apart if so configured."""
        self._logs[r.slot] = self._new_log(self.rundir.log_path(r.name, r.index))
        if r.service.stderr == "separate":
            self._err_logs[r.slot] = self._new_log(self.rundir.err_log_path(r.name, r.index))

    def _new_log(self, path: Path) -> RotatingLog:
        s = self.settings
        return RotatingLog(path, s.log_max_bytes, s.log_backups, s.log_rotate)

    def run(self) -> int:
        """The event loop; returns when every replica is stopped after a shutdown."""
        while True:
            now = time.monotonic()
            self._advance(now)
            if self._listener is not None:
                self._stand_in(now)
            if self._dirty:
                self._dirty = False
                self._snapshot_due = self._waiters_due = True
            if self._waiters_due:
                self._waiters_due = self.commands.serve_waiters(now)
            if self._snapshot_due and now >= self._next_snapshot:
                self._snapshot_due = False
                self._next_snapshot = now + SNAPSHOT_EVERY
                self._write_snapshot()
            if self.shutting_down and not any(r.state.has_process for r in self.replicas):
                break
            timeout = max(0.0, self._next_deadline(now) - time.monotonic())
            for key, _ in self._selector.select(timeout):
                try:
                    key.data(key)
                except Exception:  # a bug in one handler must not orphan every service
                    log.exception("error while handling %r", key.fileobj)
        self._finish()
        return 0

    def _finish(self) -> None:
        from procorch.supervisor.reclaim import kill_descendants

        kill_descendants()  # what services double-forked was re-parented to us: none survives
        if self._scheduler:  # stopped first, so that its last fire is in events.log
            self._scheduler.stop()
            self._reported(self._scheduler)
        self._event(None, "daemon-stop")
        self._write_snapshot(clean=True)
        for path in (self.rundir.socket, self.rundir.pid_file):
            path.unlink(missing_ok=True)
        for sink in [*self._logs.values(), *self._err_logs.values()]:
            sink.close()
        for address, sock in self._held.items():
            release_address(address, sock)
        self.hooks.close()
        if self._prober:
            self._prober.shutdown()
        # the CLI waiting on `down` sees its connection close when this process exits

    # == starting, stopping, restarting ==========================================

    def _start(self, r: Replica) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        self.stats.reset(r.slot, 0)
        r.set_state(S.STARTING)
        self._logs[r.slot].mark_run()  # `up` shows this run's lines after a failure, no older
        err_r = err_w = None
        if r.slot in self._err_logs:
            self._err_logs[r.slot].mark_run()
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
        if r.service.is_python:
            self._exit_note(r).unlink(missing_ok=True)  # a note is about its own process only
        listener = self._listener if r.service.module == GATEWAY else None
        held = tuple(self._held[address].fileno() for address in r.service.listen)
        try:
            r.spawn(self._env(r), write_fd, listener, self._umask(r), err_w, held)
        except OSError as exc:
            os.close(read_fd)
            if err_r is not None:
                os.close(err_r)
            # Retrying cannot help a program that is not there: FATAL at once, with why.
            r.last_exit = spawn_failure(exc, r.service)
            self._write_log(r.slot, f"procorch: {r.label}: {r.last_exit}\n".encode())
            self._fatal(r, r.last_exit)
            return
        finally:
            os.close(write_fd)
            if err_w is not None:
                os.close(err_w)
        os.set_blocking(read_fd, False)
        self._pipes[r.slot] = read_fd
        self._selector.register(read_fd, selectors.EVENT_READ, partial(self._on_output, r=r))
        if err_r is not None:
            os.set_blocking(err_r, False)
            self._err_pipes[r.slot] = err_r
            self._selector.register(
                err_r, selectors.EVENT_READ, partial(self._on_output, r=r, err=True)
            )
        assert r.pid is not None
        self._by_pid[r.pid] = r
        self.stats.reset(r.slot, r.pid)
        r.kill_reason = r.unhealthy_since = None
        r.probes_sent = 0
        self._event(r, "spawned", pid=r.pid)

    def _env(self, r: Replica) -> dict[str, str]:
        svc = r.service
        env = dict(os.environ)
        env.update(guardrails.identity_env(svc))
        env.update(svc.environment(r.index))
        env.update(
            PROCORCH_SERVICE=svc.name,
            PROCORCH_REPLICA=str(r.index),
            PROCORCH_RUN_DIR=str(self.rundir.path),
            PROCORCH_RUN_TOKEN=self.token,
            PROCORCH_SLOT=str(r.slot),
            PROCORCH_SUPERVISOR_PID=str(os.getpid()),
        )
        if svc.module == GATEWAY and self._listener is not None:
            env[LISTEN_FD_ENV] = str(self._listener.fileno())
        if svc.listen:
            env.update(handoff_env(len(svc.listen), svc.name))
        if svc.is_python:
            env["PROCORCH_MODULE"] = svc.module
            env["PROCORCH_HEARTBEAT_INTERVAL"] = str(min(1.0, self._heartbeat_timeout(svc) / 4))
            env["PROCORCH_LOG_LEVEL"] = self.settings.log_level  # `logging` in the service
            env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _umask(self, r: Replica) -> int:
        """The service's own umask, else a command's is the user's and a Python service
        keeps the daemon's (-1)."""
        if r.service.umask is not None:
            return r.service.umask
        return -1 if r.service.is_python else self._user_umask

    def _heartbeat_timeout(self, svc: ServiceConfig) -> float:
        return svc.heartbeat_timeout or self.settings.heartbeat_timeout

    def _stop(self, r: Replica, now: float, signalled: bool = False) -> None:
        """Stop `r`; `signalled`: its stop signal (and SIGCONT) went out already."""
        if r.state.has_process:
            if r.state is not S.STOPPING:
                r.set_state(S.STOPPING)
                r.stop_deadline = now + r.service.stop_timeout
                if not signalled:
                    r.signal_group(r.service.stop_signal)
                    r.signal_group(signal.SIGCONT)  # a SIGSTOPped process must run to handle it
                self._event(r, "stopping", pid=r.pid)
        elif r.state in (S.BACKOFF, S.EXITED, S.FATAL):
            r.set_state(S.STOPPED)
            self._event(r, "stopped")
        self._dirty = True

    def _exit_note(self, r: Replica) -> Path:
        return exit_note(self.rundir.path, r.name, r.index)

    def _exit_reason(self, r: Replica, status: int, never_ran: bool) -> str | None:
        """Why the process ended, when more is known than its exit status."""
        if r.kill_reason:  # we killed it: that is the reason, SIGKILL only the means
            return r.kill_reason
        if never_ran and r.service.command:
            return exec_failure(r.service.command[0], status, r.output_head)
        if r.service.is_python:
            try:
                note = self._exit_note(r).read_text().strip()
            except OSError:
                return None
            return note or None
        return None

    def _on_exit(self, r: Replica, status: int, now: float, never_ran: bool = False) -> None:
        pid = r.pid
        self._drain(r)  # its last words reach the log before anyone is told it died
        reason = self._exit_reason(r, status, never_ran)
        how = r.reaped(status, reason)
        was = r.state
        detail = f"{how}; {reason}" if reason else how
        if was is S.STOPPING:
            r.set_state(S.STOPPED)
            self._event(r, "stopped", pid=pid, detail=detail)
            return
        self._event(r, "exited", pid=pid, detail=detail)
        if self.shutting_down or r.retiring:
            # Died by itself while waiting for its dependents to stop: it was leaving
            # anyway, so it is not restarted; the stop in order makes it STOPPED.
            r.set_state(S.EXITED)
            return
        if never_ran and reason:
            # setpriv could not execute the command: as when spawn itself fails, retrying
            # cannot help soon, and the reason is what the user needs
            self._fatal(r, reason)
            return
        decision = after_death(
            restart=r.service.restart,
            clean_exit=exited_cleanly(status),
            ran_for=now - r.state_since if was is S.RUNNING else None,
            consecutive=r.consecutive_failures,
            crash_times=r.crash_times,
            now=now,
            limits=self._limits,
        )
        r.consecutive_failures = decision.consecutive
        r.crash_times = list(decision.crash_times)
        if decision.verdict is Verdict.LEAVE:
            r.set_state(S.EXITED)
        elif decision.verdict is Verdict.FATAL:
            window = self.settings.restart_window
            self._fatal(
                r,
                f"{len(r.crash_times)} crashes within {window:g}s, each before it had "
                f"run {STABLE_AFTER:g}s (last: {detail})",
            )
        else:
            r.set_state(S.BACKOFF)
            r.retry_at = now + decision.delay
            if decision.delay == 0:
                self._restart_now(r)
            else:
                self._event(r, "backoff", detail=f"restart in {decision.delay:.2f}s")

    def _fatal(self, r: Replica, why: str) -> None:
        """Give up on a replica for now: after its `fatal_retry` it is tried again."""
        r.set_state(S.FATAL)
        r.retry_at = fatal_retry_at(r.state_since, self._fatal_retry(r.service))
        self._event(r, "fatal", detail=why)

    def _fatal_retry(self, svc: ServiceConfig) -> float:
        return self.settings.fatal_retry if svc.fatal_retry is None else svc.fatal_retry

    def _restart_now(self, r: Replica) -> None:
        r.restarts += 1
        r.retry_at = None
        self._start(r)

    def _kill_unhealthy(self, r: Replica, reason: str) -> None:
        r.kill_reason = reason
        self._event(r, "unhealthy", pid=r.pid, detail=f"{reason}; killing")
        r.signal_group(signal.SIGKILL)

    # == timers ====================================================================

    def _advance(self, now: float) -> None:
        """Do whatever is due: backoff restarts, readiness, stop timeouts, health checks."""
        if self._prober:
            self._prober.expire(now)
        if self._probe_results:
            results, self._probe_results = self._probe_results, []
            for r, pid, problem in results:
                self._on_probe(r, pid, problem, now)
        if self.shutting_down:  # all of them, dependents first, before any could restart
            self._to_stop_in_order = list(self.replicas)
        if self._to_stop_in_order:
            self._stop_in_order(now)
        check_due = now >= self._next_check
        if check_due:
            self._next_check = now + self.settings.check_interval
            self._check_snapshot()
            for event, detail in self.hooks.reports():  # dropped or failed runs, summed up
                self._event(None, event, detail=detail)
        for r in self.replicas:
            state = r.state
            if state is S.BACKOFF and r.retry_at is not None and now >= r.retry_at:
                self._restart_now(r)
            elif state is S.FATAL and r.retry_at is not None and now >= r.retry_at:
                self._retry_fatal(r, now)
            elif state is S.STOPPED and r.want_running and not self.shutting_down:
                if self._dependencies_settled(r.service):
                    self._start(r)
            elif state is S.STOPPING and r.stop_deadline is not None and now >= r.stop_deadline:
                r.stop_deadline = None
                self._event(r, "stop-timeout", pid=r.pid, detail="sending SIGKILL")
                r.signal_group(signal.SIGKILL)
            elif state is S.STARTING:
                self._check_ready(r, now)
            if check_due and r.state in (S.STARTING, S.RUNNING):
                self._check_health(r, now)
        for r in [r for r in self.replicas if r.retiring and r.state is S.STOPPED]:
            self._remove(r)
        try:
            self.live.advance()
        except Exception:  # a bug in a rollout must not orphan every service
            log.exception("error while advancing live changes")

    def _retry_fatal(self, r: Replica, now: float) -> None:
        """Its cool-off is over: a fresh set of tries, as if a human had said `restart`."""
        waited = now - r.state_since
        r.crash_times.clear()
        r.consecutive_failures = 0
        self._event(r, "fatal-retry", detail=f"after {waited:.1f}s in fatal")
        self._restart_now(r)

    def _check_ready(self, r: Replica, now: float) -> None:
        svc = r.service
        if svc.is_python:
            ready = self.stats.read(r.slot).heartbeat > 0
        elif svc.health:
            ready = False  # the probe's answer moves it on; see _on_probe
            if self._prober and now - r.state_since >= PROBE_RETRY * (r.probes_sent + 1):
                r.probes_sent += 1
                self._prober.submit(r)
        else:
            ready = now - r.started >= svc.start_seconds
        if ready:
            self._set_running(r)

    def _set_running(self, r: Replica) -> None:
        r.set_state(S.RUNNING)
        r.probes_sent = 0
        self._event(r, "running", pid=r.pid)

    def _check_health(self, r: Replica, now: float) -> None:
        # only a running process is sampled: one still starting may not even have exec'd
        if r.state is S.RUNNING and not sample(r):
            return  # gone or a zombie: SIGCHLD is on its way and reaps it
        svc = r.service
        if svc.max_rss is not None and r.state is S.RUNNING:
            r.rss_over = guardrails.rss_over(r.rss_bytes, svc.max_rss, r.rss_over)
            if r.rss_over >= guardrails.RSS_CHECKS:
                assert r.rss_bytes is not None
                self._kill_unhealthy(r, guardrails.rss_reason(r.rss_bytes, svc.max_rss, r.rss_over))
                r.rss_over = 0
                return
        if svc.is_python:
            silent = stale_heartbeat(r, self.stats, self._heartbeat_timeout(svc), now)
            if silent is not None:
                # never beat: its import or `setup` hangs, which "for" would not say
                since = "after" if r.state is S.STARTING else "for"
                self._kill_unhealthy(r, f"no heartbeat {since} {silent:.1f}s")
        elif svc.health and r.state is S.RUNNING and self._prober:
            self._prober.submit(r)

    def _probe_done(self, r: Replica, pid: int | None, problem: str | None) -> None:
        """Called on a probe thread, or on the loop: the loop's next turn takes the result.
        A thread wakes the loop; on the loop, `_next_deadline` makes that turn at once."""
        self._probe_results.append((r, pid, problem))
        if threading.get_ident() == self._loop_thread:
            return
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full, so the loop is awake already

    def _on_probe(self, r: Replica, pid: int | None, problem: str | None, now: float) -> None:
        if pid != r.pid or r.state not in (S.STARTING, S.RUNNING):
            return  # an answer about a process that is gone by now
        if problem is None:
            r.unhealthy_since = None
            if r.state is S.STARTING:
                self._set_running(r)
            return
        since = r.unhealthy_since = r.unhealthy_since or now
        if r.state is S.STARTING:
            since = r.started
        if now - since > self._heartbeat_timeout(r.service):
            self._kill_unhealthy(r, f"{problem} for {now - since:.1f}s")

    def _next_deadline(self, now: float) -> float:
        if self._probe_results:  # answered on the loop, during this turn
            return now
        deadline = min([self._next_check, *self._lingering.values()])
        if self._prober and (probe_deadline := self._prober.next_deadline()) is not None:
            deadline = min(deadline, probe_deadline)
        if self._snapshot_due:
            deadline = min(deadline, self._next_snapshot)
        if self._waiters_due:
            deadline = min(deadline, self.commands.next_progress)
        for r in self.replicas:
            if r.state in (S.BACKOFF, S.FATAL) and r.retry_at is not None:
                deadline = min(deadline, r.retry_at)
            elif r.state is S.STOPPING and r.stop_deadline is not None:
                deadline = min(deadline, r.stop_deadline)
            elif r.state is S.STARTING:
                if r.service.is_python:
                    deadline = min(deadline, now + READY_POLL)
                elif r.service.health:
                    deadline = min(deadline, now + PROBE_RETRY)
                else:
                    deadline = min(deadline, r.started + r.service.start_seconds)
        return deadline

    def _dependencies_settled(self, svc: ServiceConfig) -> bool:
        """Dependents start once every replica they depend on has started (or given up)."""
        if not svc.depends_on:
            return True
        return all(r.settled for r in self.replicas if r.name in svc.depends_on)

    # == the gateway's port while no gateway runs ====================================

    def _gateway_expected(self) -> bool:
        wanted = not self.shutting_down
        return gateway_expected((r.state, r.want_running and wanted) for r in self._gateways)

    def _stand_in(self, now: float) -> None:
        """Answer the gateway's port ourselves exactly while no gateway process will."""
        assert self._listener is not None
        needed = not self._gateway_expected()
        if needed != self._standing_in:
            self._standing_in = needed
            if needed:
                self._selector.register(self._listener, selectors.EVENT_READ, self._on_http)
            else:  # what arrives from now on waits in the backlog for the gateway
                self._selector.unregister(self._listener)
        for conn, deadline in list(self._lingering.items()):
            if now >= deadline:
                self._close_lingering(conn)

    def _on_http(self, key: selectors.SelectorKey) -> None:
        if self._gateway_expected():
            return  # asked to start since the loop looked: leave them queued for it
        message, retry_after = self._why_no_gateway()
        answer = unavailable_response(message, retry_after)
        for _ in range(64):  # a burst at a time, so other work is not starved
            try:
                conn, _ = key.fileobj.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: they wait in the backlog
                log.warning("cannot accept on the gateway's port: %s", exc)
                return
            self._answer(conn, answer)

    def _why_no_gateway(self) -> tuple[str, int | None]:
        states = sorted({r.state.value for r in self._gateways})
        message = f"the gateway is not running ({', '.join(states)})"
        retry = [r.retry_at for r in self._gateways if r.state is S.FATAL and r.retry_at]
        if not retry:
            return message, None
        seconds = int(min(retry) - time.monotonic()) + 1
        return f"{message}; it is tried again in {seconds}s", seconds

    def _answer(self, conn: socket.socket, answer: bytes) -> None:
        """Send the 503 and our FIN, then read until the client hangs up: closing with
        its request unread would send a reset, which can destroy the answer in flight."""
        conn.setblocking(False)
        try:
            conn.send(answer)  # a few hundred bytes into an empty socket buffer: all of it
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        if len(self._lingering) >= MAX_LINGERING:
            self._close_lingering(next(iter(self._lingering)))
        self._lingering[conn] = time.monotonic() + LINGER
        self._selector.register(conn, selectors.EVENT_READ, self._on_linger)

    def _on_linger(self, key: selectors.SelectorKey) -> None:
        data = _received(key.fileobj)
        if data is None:
            return
        if not data:
            self._close_lingering(key.fileobj)

    def _close_lingering(self, conn: socket.socket) -> None:
        del self._lingering[conn]
        self._selector.unregister(conn)
        conn.close()

    # == shutdown =================================================================

    def shutdown(self) -> None:
        if not self.shutting_down:
            self.shutting_down = True
            sdnotify.notify("STOPPING=1")
            self._event(None, "daemon-stopping")
            for r in self.replicas:
                r.want_running = False
            self._dirty = True
            # A quick shutdown writes state.json once, clean, at its end (_finish); one
            # that lasts (a service slow to stop) shows its "stopping" states as usual.
            self._next_snapshot = max(self._next_snapshot, time.monotonic() + SNAPSHOT_EVERY)

    def _stop_in_order(self, now: float) -> None:
        """Stop those of `_to_stop_in_order` that no running replica depends on."""
        alive = {r.name for r in self.replicas if r.state.has_process}
        waiting, due = [], []
        for r in self._to_stop_in_order:
            if self._dependents.get(r.name, set()) & alive:
                waiting.append(r)
            elif r.state is not S.STOPPING:
                due.append(r)
        self._to_stop_in_order = waiting
        # Every stop signal goes out before any bookkeeping (states, events.log): the
        # last process signalled does not wait for the events of all those before it,
        # and they all exit side by side while the daemon writes what happened.
        leaving = [r for r in due if r.state.has_process]
        for r in leaving:
            r.signal_group(r.service.stop_signal)
        for r in leaving:
            r.signal_group(signal.SIGCONT)  # a SIGSTOPped process must run to handle it
        for r in due:
            self._stop(r, now, signalled=True)

    def _reclaim_stale(self) -> None:
        """After a daemon died uncleanly, end what it left running. Never touches strangers."""
        token = self.rundir.crashed_token()
        self.rundir.socket.unlink(missing_ok=True)
        if token is None:
            return
        from procorch.supervisor.reclaim import end_token_holders

        ended = end_token_holders(token)
        if ended:
            self._event(None, "reclaimed", detail=f"ended {ended} processes of a crashed daemon")

    # == events and state on disk =================================================

    def _event(
        self, r: Replica | None, event: str, pid: int | None = None, detail: str = ""
    ) -> None:
        entry: dict[str, Any] = {"time": now_iso(), "event": event}
        if r is not None:
            entry.update(service=r.name, replica=r.index)
        if pid is not None:
            entry["pid"] = pid
        if detail:
            entry["detail"] = detail
        self._append_event(json.dumps(entry) + "\n")
        self._dirty = True
        if self.hooks:
            self.hooks.notify(entry, time.monotonic())  # queued for its thread, if any
        level = logging.WARNING if event in PROBLEMS else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "%s %s %s", r.label if r else "procorch", event, detail)
        if self.foreground:
            who = r.label if r else "procorch"
            extra = f" pid {pid}" if pid else ""
            line = f"[{who}] {event}{extra} {detail}".rstrip()
            try:
                sys.stdout.write(f"\x1b[2m{line}\x1b[0m\n" if self._colour else f"{line}\n")
                sys.stdout.flush()
            except OSError:
                pass  # a terminal gone or a full disk behind stdout: events.log has it

    def _reported(self, scheduler: Any, key: selectors.SelectorKey | None = None) -> None:
        for event, detail in scheduler.reports():  # written from here: one thread writes events
            self._event(None, event, detail=detail)

    # == a run directory that refuses writes (a full disk) ============================

    def _refused(self, what: str, exc: OSError, dropped: int = 0) -> None:
        """A write failed: note it (once: an event and a warning), and go on supervising."""
        if self.disk.refused(what, exc, dropped):
            self._event(None, "disk-full", detail=f"cannot write {what}: {exc.strerror or exc}")
            self._retry_snapshot()  # its success is what ends the condition

    def _retry_snapshot(self) -> None:
        self._snapshot_due = True
        self._next_snapshot = time.monotonic() + diskfull.RETRY

    def _write_log(self, slot: int, data: bytes, err: bool = False) -> None:
        sink = (self._err_logs if err else self._logs)[slot]
        before = sink.dropped
        error = sink.write(data)
        if error is not None:
            self._refused("service logs", error, sink.dropped - before)

    def _append_event(self, line: str) -> None:
        if not self.disk.failing:  # else in order behind those already waiting
            try:
                self._events.append(line)
                return
            except OSError as exc:
                self._refused("events.log", exc)
        if len(self._pending_events) >= diskfull.PENDING_EVENTS:
            self._pending_events.popleft()
            self.disk.lost_events += 1
        self._pending_events.append(line)

    def _daemon_log_refused(self, exc: OSError) -> None:
        self._refused("daemon.log", exc)

    def _disk_ok(self) -> None:
        """A snapshot was written, with room to spare: write what waited, say so."""
        summary = self.disk.recovered()
        while self._pending_events:
            try:
                self._events.append(self._pending_events[0])
            except OSError as exc:
                self._refused("events.log", exc)
                return
            self._pending_events.popleft()
        self._event(None, "disk-ok", detail=summary)

    def _write_snapshot(self, clean: bool = False) -> None:
        try:
            written = self._snapshot(clean)
        except OSError as exc:
            self._refused("state.json", exc)
            self._retry_snapshot()
            return
        self._snapshot_stamp = _stamp(written)
        if self.disk.failing:
            if _free_bytes(self.rundir.path) >= diskfull.HEADROOM:
                self._disk_ok()
            else:
                self._retry_snapshot()  # room for a snapshot, not yet for the output

    def _snapshot(self, clean: bool) -> os.stat_result:
        return self.rundir.write_state(
            {
                "token": self.token,
                "pid": os.getpid(),
                "clean": clean,
                "updated": now_iso(),
                "processes": [
                    {
                        "service": r.name,
                        "replica": r.index,
                        "state": r.state.value,
                        "pid": r.pid,
                        "create_time": r.create_time,
                        "restarts": r.restarts,
                        "socket": self._socket(r),
                        "registered_at": r.started_at,
                        "slot": r.slot,
                    }
                    for r in self.replicas
                ],
            }
        )

    def _check_snapshot(self) -> None:
        """Rewrite state.json soon if it is not what we last wrote: readers fail on a
        corrupt one, and nothing else would make us write it while nothing changes."""
        try:
            stamp: tuple[int, ...] | None = _stamp(os.stat(self.rundir.state_file))
        except OSError:
            stamp = None
        if stamp != self._snapshot_stamp and not self._snapshot_due:
            self._event(None, "state-rewritten", detail="state.json was changed or removed")

    def _socket(self, r: Replica) -> str | None:
        """Where a Python replica takes requests (the registry publishes it)."""
        if not r.service.is_python:
            return None
        return str(service_socket(self.rundir.path, r.name, r.index))

    def status(self, targets: list[Replica] | None = None) -> dict[str, Any]:
        now = time.monotonic()
        services = []
        for r in self.replicas if targets is None else targets:
            if r.state is S.RUNNING and r.cpu_mark is None:
                sample(r)  # never looked at since it started: a first look, now
            slot = self.stats.read(r.slot)
            alive = r.state.has_process and r.pid is not None
            services.append(
                {
                    "name": r.name,
                    "replica": r.index,
                    "state": r.state.value,
                    "pid": r.pid,
                    "uptime": round(r.uptime(now), 3) if alive else None,
                    "restarts": r.restarts,
                    "cpu_percent": r.cpu_percent,
                    "rss_bytes": r.rss_bytes,
                    "heartbeat_age": (
                        round(slot.heartbeat_age(now), 3)
                        if alive and r.service.is_python and slot.heartbeat
                        else None
                    ),
                    "requests": slot.requests,
                    "errors": slot.errors,
                    "last_exit": r.last_exit,
                    # where the current (or last) process's output starts in its log file
                    "log_offset": self._logs[r.slot].run_start,
                    "err_log_offset": (  # the same in its stderr file, if it has one
                        self._err_logs[r.slot].run_start if r.slot in self._err_logs else None
                    ),
                    "started_at": r.started_at if alive else None,
                    "socket": self._socket(r),
                }
            )
        return {
            "supervisor": {
                "pid": os.getpid(),
                "state": "stopping" if self.shutting_down else "running",
                "uptime": round(now - self.started, 3),
                "run_dir": str(self.rundir.path),
                "config": str(self.config.path) if self.config.path else None,
                "warnings": self.disk.warnings(),
            },
            "services": services,
        }

    # == I/O callbacks ==============================================================

    def _on_signal(self, key: selectors.SelectorKey) -> None:
        try:
            data = os.read(self._wake_r, 512)
        except BlockingIOError:
            return
        if any(b in data for b in (signal.SIGTERM, signal.SIGINT)):
            self.shutdown()
        elif signal.SIGHUP in data and not self.shutting_down:
            self.live.reload_file()
        if signal.SIGUSR2 in data:  # logrotate's postrotate: `kill -USR2 $(cat procorch.pid)`
            self.reopen_logs()
        if signal.SIGCHLD in data:
            self._reap()

    def _reap(self) -> None:
        now = time.monotonic()
        while True:
            try:
                # WNOWAIT: the dead leader stays a zombie while we kill its group, so its
                # pid (and so the group id) cannot be reused by a stranger in between.
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            r = self._by_pid.pop(info.si_pid, None)
            never_ran = False
            if r is not None:
                r.signal_group(signal.SIGKILL)  # "never two copies": its leftovers go too
                # only a zombie still shows which program it was: look before reaping it
                failed_exec = info.si_code == os.CLD_EXITED and info.si_status in (126, 127)
                never_ran = failed_exec and r.still_setpriv()
            else:
                self.hooks.reaping(info.si_pid)  # a hook's, maybe: its pid is not to be used
            try:
                _, status = os.waitpid(info.si_pid, 0)
            except ChildProcessError:  # reaped by another thread after all: not ours to mind
                continue
            if r is not None:
                self._on_exit(r, status, now, never_ran)
            else:
                self.hooks.reaped(info.si_pid, status)

    def _on_output(self, key: selectors.SelectorKey, r: Replica, err: bool = False) -> None:
        if self._selector.get_map().get(key.fd) is not key:
            return  # closed by an earlier handler of the same batch (a drain, a removal)
        if self._slot_owner.get(r.slot) is not r:
            # an earlier process's pipe, held by a grandchild that left its group, of a
            # replica that has left since: its slot (and log) may be another's now
            self._selector.unregister(key.fd)
            os.close(key.fd)
            return
        self._read_output(key.fd, r, err)

    def _read_output(self, fd: int, r: Replica, err: bool = False) -> bool:
        """Move one chunk from a process's output (or stderr) pipe to its log; False once
        none is left."""
        pipes = self._err_pipes if err else self._pipes
        slot = r.slot
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if not data:
            self._selector.unregister(fd)
            os.close(fd)
            if pipes.get(slot) == fd:
                del pipes[slot]
            return False
        if len(r.output_head) < OUTPUT_HEAD and pipes.get(slot) == fd:
            r.output_head += data[: OUTPUT_HEAD - len(r.output_head)]
        self._write_log(slot, data, err)
        echo = (self._err_echo if err else self._echo).get(slot)
        if echo:
            echo.write(data)
        return True

    def _drain(self, r: Replica) -> None:
        """Read what a dead process left in its pipe.

        Bounded: a grandchild that left the process group may keep the pipe open and
        writing; the loop must not be held by it (the rest comes as usual).
        """
        for err, pipes in ((False, self._pipes), (True, self._err_pipes)):
            fd = pipes.get(r.slot)
            for _ in range(DRAIN_READS):
                if fd is None or not self._read_output(fd, r, err):
                    break

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = str(self.rundir.socket)
        old_umask = os.umask(0o177)  # owner-only from the first instant
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, self._on_accept)

    def _on_accept(self, key: selectors.SelectorKey) -> None:
        try:
            conn, _ = key.fileobj.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        client = Client(conn)
        self._selector.register(conn, selectors.EVENT_READ, partial(self._on_conn, client=client))

    def _on_conn(self, key: selectors.SelectorKey, client: Client) -> None:
        data = _received(client.sock)
        if data is None:
            return
        if not data:
            self._drop(client)
            return
        client.inbuf += data
        if b"\n" not in client.inbuf:
            if len(client.inbuf) > control.MAX_REQUEST:
                client.send({"ok": False, "error": "request too large"})
                self._drop(client)
            return
        # every complete line is a request, however the bytes arrived: one reply each
        *lines, client.inbuf = client.inbuf.split(b"\n")
        for line in lines:
            if line.strip():
                self._request(client, line)

    def _request(self, client: Client, line: bytes) -> None:
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
            self.commands.handle(client, message)
        except RecursionError:  # [[[[... deeper than the parser goes
            client.send({"ok": False, "error": "bad request: nested too deeply"})
        except (ValueError, TypeError, KeyError) as exc:
            client.send({"ok": False, "error": f"bad request: {exc}"})
        except Exception:  # a bug: logged, and the client still gets an answer
            log.exception("error while handling a control request")
            client.send({"ok": False, "error": "internal error (see daemon.log)"})

    def _drop(self, client: Client) -> None:
        self.commands.forget(client)
        try:
            self._selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()

    # == what control requests do (supervisor/commands.py answers them) ==============

    def changed(self) -> None:
        """Something a waiting client or state.json shows has changed."""
        self._dirty = True

    def event(
        self, event: str, detail: str = "", replica: Replica | None = None, pid: int | None = None
    ) -> None:
        """An event in events.log: of the daemon itself, or of one replica."""
        self._event(replica, event, pid=pid, detail=detail)

    def snapshot_now(self, now: float) -> None:
        """Write a state.json that is due at once, not at the next tick."""
        if self._snapshot_due:
            self._snapshot_due = False
            self._next_snapshot = now + SNAPSHOT_EVERY
            self._write_snapshot()

    def reopen_logs(self) -> int:
        """Open every log file again at its path (logrotate renamed them); how many."""
        # a replacement shares its predecessor's file: each file once
        sinks = dict.fromkeys([*self._logs.values(), *self._err_logs.values()])
        reopens: list[Callable[[], object]] = [sink.reopen for sink in sinks]
        reopens.append(self._events.reopen)
        if self.daemon_log_fd is not None:
            reopens.append(partial(reopen_fd, self.rundir.daemon_log, self.daemon_log_fd))
        reopened = 0
        for reopen in reopens:  # one that fails does not keep the others on the old files
            try:
                reopen()
                reopened += 1
            except OSError as exc:
                self._refused("a reopened log file", exc)
        self.hooks.reopen()  # hooks.log: at its next run
        self._event(None, "logs-reopened", detail=f"{reopened} files")
        return reopened

    def request_stop(self, r: Replica, now: float) -> None:
        r.want_running = False
        self._stop(r, now)

    # == replicas joining and leaving a running stack (supervisor/live.py decides) ====

    def _new_replica(self, svc: ServiceConfig, index: int) -> Replica:
        slot = self._free_slots.pop() if self._free_slots else len(self._slot_owner)
        r = self._slot_owner[slot] = Replica(svc, index, slot=slot)
        return r

    def _open_io(self, r: Replica, like: Replica | None = None) -> None:
        """Its log file(s), those of `like` (the replica it replaces, while that one is
        still there: one file per replica number), and its foreground echo."""
        if like is None or like not in self.replicas:
            self._open_logs(r)
        else:
            self._logs[r.slot] = self._logs[like.slot]
            if r.service.stderr == "separate":
                self._err_logs[r.slot] = self._err_logs.get(like.slot) or self._new_log(
                    self.rundir.err_log_path(r.name, r.index)
                )
        if self.foreground:
            out, width = sys.stdout.buffer, self._echo_width
            stamps = r.service.log_timestamps or self.settings.log_timestamps
            self._echo[r.slot] = Echo(r.label, r.slot, width, out, self._colour, stamps)
            if r.slot in self._err_logs:  # its own partial lines: never glued to stdout's
                self._err_echo[r.slot] = Echo(r.label, r.slot, width, out, self._colour, stamps)

    def add_replica(self, svc: ServiceConfig, index: int) -> Replica:
        """A new replica, started by the loop once its dependencies have settled."""
        r = self._new_replica(svc, index)
        self.stats.grow(len(self._slot_owner))
        self._open_io(r)
        self.replicas.append(r)
        self._joined()
        return r

    def add_replacement(self, old: Replica, service: ServiceConfig, wanted: bool) -> Replica:
        """A replica to take `old`'s place (same number, same log file), just after it;
        `old` may have left already (stop first). `wanted`: whether it is to run."""
        r = self._new_replica(service, old.index)
        r.want_running = wanted
        self.stats.grow(len(self._slot_owner))
        self._open_io(r, old)
        self.replicas.append(r)
        self._joined()  # sorted by service and number: just after `old`, if it is there
        return r

    def retire(self, r: Replica, in_order: bool = False) -> None:
        """Stop `r` for good; it leaves the stack once stopped. `in_order`: only after
        every replica that depends on its service has stopped (a removed service)."""
        r.retiring = True
        r.want_running = False
        if in_order and r.state.has_process:  # without one, nothing to wait for
            self._to_stop_in_order.append(r)
        else:
            self._stop(r, time.monotonic())
        self._dirty = True

    def _remove(self, r: Replica) -> None:
        self.replicas.remove(r)
        for pipes in (self._pipes, self._err_pipes):
            fd = pipes.pop(r.slot, None)
            if fd is not None:  # a grandchild that left its group still holds it
                self._selector.unregister(fd)
                os.close(fd)
        for sinks in (self._logs, self._err_logs):
            sink = sinks.pop(r.slot, None)
            if sink is not None and all(other is not sink for other in sinks.values()):
                sink.close()  # not shared with the replica that replaced it
        for echoes in (self._echo, self._err_echo):
            echo = echoes.pop(r.slot, None)
            if echo is not None:
                echo.close()
        del self._slot_owner[r.slot]
        self._free_slots.append(r.slot)
        self._joined()
        self._dirty = True

    def _joined(self) -> None:
        """The set of replicas changed: what is derived from it follows."""
        order = {svc.name: i for i, svc in enumerate(self.config.services)}
        self.replicas.sort(key=lambda r: (order.get(r.name, len(order)), r.index))
        self._gateways = [r for r in self.replicas if r.service.module == GATEWAY]

    def adopt(self, config: Config) -> None:
        """Run by `config` from now on: settings, dependencies and config.json follow."""
        old_services = self.config.services
        self.config, self.settings = config, config.settings
        self._limits = Limits(
            self.settings.max_restarts, self.settings.restart_window, self.settings.backoff_max
        )
        self._dependents = dependents(config.services)
        # removed services stop dependents first, among themselves (no kept one may
        # depend on them: the new config would not have validated)
        names = {svc.name for svc in config.services}
        self._dependents |= dependents(tuple(s for s in old_services if s.name not in names))
        logging.getLogger().setLevel(self.settings.log_level)
        settings = self.settings
        for sink in [*self._logs.values(), *self._err_logs.values()]:
            sink.set_limits(settings.log_max_bytes, settings.log_backups, settings.log_rotate)
        if self._prober is None and any(svc.health for svc in config.services):
            self._prober = Prober(self._probe_done, self._selector)
        self.rundir.write_atomic(self.rundir.config_file, config.to_json())

    def hold(self, services: tuple[ServiceConfig, ...]) -> None:
        """Bind every `listen` address of `services` not held yet; BindError (with none
        of those it bound kept) if one cannot be."""
        bound: list[str] = []
        try:
            for svc in services:
                for address in svc.listen:
                    if address not in self._held:
                        self._held[address] = bind_address(address)
                        bound.append(address)
        except BindError:
            for address in bound:
                release_address(address, self._held.pop(address))
            raise

    def release_unheld(self) -> None:
        """Close the sockets no service lists any more (replicas keep their own copies)."""
        wanted = {address for svc in self.config.services for address in svc.listen}
        for address in [a for a in self._held if a not in wanted]:
            release_address(address, self._held.pop(address))

    def request_start(self, r: Replica, now: float, restart: bool = False) -> None:
        r.want_running = True
        r.crash_times.clear()  # a human asked: FATAL is cleared, the window starts afresh
        r.consecutive_failures = 0
        if r.state.has_process:
            if restart:
                self._stop(r, now)  # when it is gone, want_running starts it again
        elif r.state is S.BACKOFF:
            self._restart_now(r)
        elif r.state is not S.STOPPED:
            r.set_state(S.STOPPED)  # EXITED / FATAL: the loop starts it (after its dependencies)


def _free_bytes(path: Path) -> int:
    """Room left for us on `path`'s filesystem (root may use the blocks kept for it)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    """What tells one version of a file from another without reading it."""
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _note_signal(signum: int, frame: object) -> None:
    """Python-level handler: nothing to do, the wake-up fd already carries the signal."""


def _raise_fd_limit() -> None:
    """An output pipe per replica: lift the soft descriptor limit to the hard one if we may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # keep the soft limit: fine unless there are hundreds of replicas


def serve(
    config: Config,
    foreground: bool = False,
    ready: Callable[[str | None], None] | None = None,
    log_fd: int | None = None,
) -> int:
    """Run a daemon to completion. `ready(error)` is called once it is up (or failed).

    `log_fd`: where the daemon's own log goes from then on (the detached daemon's
    daemon.log), through a handler that survives a full disk."""
    sup = Supervisor(config, foreground=foreground)
    try:
        sup.prepare()
    except StartError as exc:
        if ready:
            ready(str(exc))
        return 3
    if ready:
        ready(None)
    sdnotify.notify("READY=1")  # under systemd's Type=notify: `systemctl start` returns
    sup.daemon_log_fd = log_fd
    if log_fd is not None:
        handler = DaemonLogHandler(log_fd, sup._daemon_log_refused)
        logging.basicConfig(level=config.settings.log_level, handlers=[handler])
    return sup.run()


def _received(sock: socket.socket) -> bytes | None:
    """What a non-blocking socket has for us: None if nothing yet, b"" once the peer
    closed it (or it broke)."""
    try:
        return sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
