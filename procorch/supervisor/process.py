"""One replica of a service: how it is spawned, signalled and identified.

A replica runs in its own session (so its own process group): stopping it signals
the whole group, which takes down whatever it forked itself. Signals go only to a
leader the daemon has not reaped yet, whose pid therefore cannot have been reused;
its (pid, create time) identity is recorded when it is first sampled, and what a
crashed daemon left behind is found by run token (see `reclaim`), never by pid alone.
The state machine lives in `state.py`; the decisions (when to restart) in `daemon.py`.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from procorch.config import ServiceConfig
from procorch.supervisor import guardrails
from procorch.supervisor.lifeline import die_with_parent
from procorch.supervisor.rundir import now_iso
from procorch.supervisor.sockets import handoff_argv
from procorch.supervisor.state import ProcessState

# util-linux's setpriv (always there on Debian and most Linux systems) gives commands
# PDEATHSIG without a preexec_fn, which would cost the daemon ~1.4 ms a spawn.
_SETPRIV = guardrails.SETPRIV
OUTPUT_HEAD = 512  # bytes of a process's first output kept, for setpriv's exec error


def _find_program(name: str, path: str | None, cwd: Path | None) -> str:
    """The executable `name` resolves to, or FileNotFoundError/PermissionError now.

    Checked here because behind setpriv an exec failure would only show as an exit.
    """
    if "/" in name:
        # os.path.join, not Path: Path("./x") drops the "./", and a bare "x" given to
        # setpriv would be looked up in PATH instead of the working directory.
        program = name if os.path.isabs(name) else os.path.join(cwd or ".", name)
        if not os.path.isfile(program):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        if not os.access(program, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
        return program
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "not found in PATH", name)
    return found


def spawn_failure(exc: OSError, service: ServiceConfig) -> str:
    """Why `spawn` raised, in one line: 'cannot execute /no/such/binary: No such file ...'."""
    why = exc.strerror or str(exc)
    if service.cwd is not None and exc.filename == str(service.cwd):
        return f"cannot change into {service.cwd}: {why}"  # Popen names the cwd it failed on
    program = service.command[0] if service.command else sys.executable
    return f"cannot execute {program}: {why}"


def exec_failure(program: str, status: int, output_head: bytes) -> str | None:
    """Why setpriv could not execute `program`, if a leader that was still setpriv died so.

    setpriv exits 127 (not found) or 126 (any other exec error) after printing
    "setpriv: failed to execute PROGRAM: REASON". Its wording may be translated, so the
    line is only mined for the reason; that the command never ran is known from the
    dead leader's name (see `Replica.still_setpriv`), not from this text.
    """
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) not in (126, 127):
        return None
    line = output_head.split(b"\n", 1)[0].decode(errors="replace").strip()
    prefix = "setpriv: failed to execute "
    if line.startswith(prefix):
        line = line[len(prefix) :].partition(": ")[2] or line
    return f"cannot execute {program}: {line or f'exit status {os.WEXITSTATUS(status)}'}"


@dataclass
class Replica:
    """A service replica: its state and, while it has one, its OS process."""

    service: ServiceConfig
    index: int  # 0-based replica number
    slot: int  # its slot in the shared stats table
    state: ProcessState = ProcessState.STOPPED
    popen: subprocess.Popen | None = None
    pid: int | None = None
    create_time: float | None = None
    started: float = 0.0  # time.monotonic() at spawn
    started_at: str | None = None  # the same moment for humans: UTC, ISO 8601
    state_since: float = field(default_factory=time.monotonic)
    restarts: int = 0
    crash_times: list[float] = field(default_factory=list)  # within the restart window
    consecutive_failures: int = 0
    retry_at: float | None = None  # BACKOFF: when to start again
    stop_deadline: float | None = None  # STOPPING: when to SIGKILL
    want_running: bool = True  # what the user asked for; `stop NAME` clears it
    retiring: bool = False  # leaving the stack (reload, scale, rollout): dropped once stopped
    kill_reason: str | None = None  # why the supervisor killed it, for the event log
    last_exit: str | None = None  # why the last process ended: a reason if known, else how
    output_head: bytes = b""  # the first OUTPUT_HEAD bytes the current process wrote
    probes_sent: int = 0  # readiness probes sent while STARTING
    unhealthy_since: float | None = None  # first failed probe of the current run of failures
    cpu_percent: float | None = None
    cpu_mark: tuple[float, float] | None = None  # (CPU seconds, monotonic time) when sampled
    rss_bytes: int | None = None
    rss_over: int = 0  # consecutive health checks that saw rss_bytes over max_rss

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def label(self) -> str:
        return f"{self.name}.{self.index}"

    @property
    def settled(self) -> bool:
        """Waits for nothing: running, stopped (as asked), exited or fatal."""
        return self.state.is_settled and not (
            self.state is ProcessState.STOPPED and self.want_running
        )

    def set_state(self, new: ProcessState) -> None:
        self.state = self.state.check(new)
        self.state_since = time.monotonic()

    def spawn(
        self,
        env: dict[str, str],
        stdout: int,
        listener: socket.socket | None = None,
        umask: int = -1,
        stderr: int | None = None,
        held: tuple[int, ...] = (),
    ) -> None:
        """Start the OS process. Raises OSError when the program cannot be executed.

        `listener`, a listening socket the daemon owns, is inherited by the process;
        `umask` is set in the child (-1: the daemon's own); `stderr`, a pipe of its own
        (`stderr = "separate"`), else it shares `stdout`; `held`, the descriptors of its
        `listen` sockets, become its fds 3..."""
        svc = self.service
        preexec = None
        command = svc.argv(self.index)
        if command:
            program = _find_program(command[0], env.get("PATH"), svc.cwd)
            argv = [program, *command[1:]]
            if _SETPRIV:  # sets PDEATHSIG, then execs: Popen keeps its fast vfork path
                identity = guardrails.identity_args(svc)  # user/group: setpriv switches too
                argv = [_SETPRIV, "--pdeathsig", "TERM", *identity, "--", *argv]
            else:
                preexec = functools.partial(die_with_parent, os.getpid())
            if held:
                argv = handoff_argv(held, argv)
        else:
            argv = [sys.executable, "-m", "procorch.services"]  # calls die_with_parent itself
        argv = [*guardrails.limit_args(svc), *argv]  # rlimits: prlimit, outermost
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stderr is None else stderr,
            cwd=svc.cwd,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
            close_fds=True,
            pass_fds=(listener.fileno(),) if listener is not None else held,
            umask=umask,  # set between fork and exec, still on Popen's vfork path
        )
        self.pid = self.popen.pid
        self.output_head = b""
        self.started = time.monotonic()
        self.started_at = now_iso()
        # identity (create time) and usage are read at the first health check (see
        # health.sample): until we reap it, the pid cannot be reused by anyone else
        self.create_time = self.cpu_percent = self.rss_bytes = self.cpu_mark = None
        self.rss_over = 0

    def still_setpriv(self) -> bool:
        """Whether the dead but unreaped leader never got past setpriv to the command.

        A zombie keeps the name (comm) of the last program it executed: if that is
        still setpriv, its exec of the command failed. Language-independent, unlike
        setpriv's message.
        """
        if not (self.service.command and _SETPRIV) or self.pid is None:
            return False
        try:
            with open(f"/proc/{self.pid}/comm") as f:
                return f.read().strip() == os.path.basename(_SETPRIV)
        except OSError:
            return False

    def signal_group(self, sig: int) -> bool:
        """Signal the replica's process group, while its leader is ours and unreaped;
        False if there is none."""
        if self.pid is None:
            return False
        try:
            os.killpg(self.pid, sig)  # start_new_session: pgid == pid
        except ProcessLookupError:
            return False
        return True

    def signal_leader(self, sig: int) -> bool:
        """Signal the replica's main process alone, while ours and unreaped; False if none."""
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def reaped(self, status: int, reason: str | None = None) -> str:
        """Record the leader's exit; returns how it ended, like 'exit status 1'.

        `last_exit` becomes `reason` (why it ended, when known) or else that description.
        """
        if self.popen is not None:
            # Popen must not wait for a pid we reaped: the number may belong to a new child now.
            self.popen.returncode = os.waitstatus_to_exitcode(status)
        self.pid = self.create_time = None
        self.cpu_percent = self.rss_bytes = self.cpu_mark = None
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            how = f"killed by {name}"
        else:
            how = f"exit status {os.WEXITSTATUS(status)}"
        self.last_exit = reason or how
        return how

    def uptime(self, now: float) -> float:
        return now - self.started


def exited_cleanly(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
