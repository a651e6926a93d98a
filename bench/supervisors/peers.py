"""The supervisors under test, behind one small interface.

A `Peer` is one daemon run: a fresh working directory (config, sockets, logs, pid file),
a marker argument unique to that run that every child it supervises carries, and the
commands that start it, query its status, apply an edited config live, restart one
program and shut it down. Every peer runs at its own defaults; the configs below set only
paths and what to run (a stack of `programs.Program`s).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness import procs
from harness.venv import BIN_DIR, VENV_PYTHON

from supervisors.programs import Program

SLEEPER = Path(__file__).resolve().parent / "sleeper.py"
POLL_START = 0.005  # seconds between process counts while starting/stopping


class PeerError(Exception):
    """A peer failed to start, answer or stop; str() says how."""


@dataclass(frozen=True)
class StartTiming:
    all_alive: float  # seconds from launch until N sleepers were alive
    command_returned: float  # seconds from launch until the start command exited


@dataclass(frozen=True)
class StopTiming:
    children_gone: float  # seconds from the stop command until no sleeper was left
    command_returned: float


class Peer(ABC):
    """One run of one supervisor; subclasses say how to configure and drive it."""

    name: ClassVar[str]
    package: ClassVar[str]  # distribution name, for the version
    start_waits_for_ready: ClassVar[bool] = False  # start command returns once all run

    def __init__(self, workdir: Path, marker: str) -> None:
        self.workdir = workdir
        self.marker = marker
        self.workdir.mkdir(parents=True)
        self._daemon_pid: int | None = None
        self._daemon_started = 0.0  # its create time: a pid can be reused once it is gone

    # --- what each peer defines -------------------------------------------------------

    @abstractmethod
    def write_stack(self, programs: Sequence[Program]) -> None:
        """Write the config running `programs` into the working directory (over the one
        the daemon runs, for a live reload)."""

    @abstractmethod
    def start_cmd(self) -> list[str]: ...

    @abstractmethod
    def status_cmd(self) -> list[str]: ...

    @abstractmethod
    def stop_cmd(self) -> list[str]: ...

    @abstractmethod
    def reload_cmds(self) -> list[list[str]]:
        """The commands, run one after the other, that apply the edited config live."""

    @abstractmethod
    def restart_cmd(self, program: Program) -> list[str]:
        """The command that restarts every copy of one program, as its users would."""

    @abstractmethod
    def _read_daemon_pid(self) -> int | None:
        """The daemon's pid as the peer publishes it, or None if not (yet) known."""

    # --- shared behaviour -------------------------------------------------------------

    @classmethod
    def version(cls) -> str:
        try:
            return importlib.metadata.version(cls.package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def sleeper_argv(self) -> list[str]:
        return [str(VENV_PYTHON), str(SLEEPER), self.marker]

    def write_config(self, n: int) -> None:
        """Write the config for N replicas of the sleeper into the working directory."""
        self.write_stack([Program("sleeper", tuple(self.sleeper_argv()), replicas=n)])

    def alive(self) -> set[int]:
        """Pids of this run's sleepers that are alive right now."""
        return procs.pids_with_arg(self.marker)

    def daemon_pid(self) -> int | None:
        if self._daemon_pid is None:
            self._daemon_pid = self._read_daemon_pid()
            if self._daemon_pid is not None:
                self._daemon_started = procs.create_time(self._daemon_pid)
        return self._daemon_pid

    def start(self, n: int, timeout: float = 60.0) -> StartTiming:
        """Launch the daemon; return once N sleepers are alive and the command exited."""
        self.write_config(n)
        return self.launch(n, timeout)

    def launch(self, n: int, timeout: float = 60.0) -> StartTiming:
        """Launch the daemon on the config written; return once N children are alive and
        the command exited."""
        log = self.workdir / "start.log"
        with open(log, "wb") as out:
            t0 = time.perf_counter()
            cmd = self.popen(self.start_cmd(), out)
            all_alive = returned = None
            while all_alive is None or returned is None:
                now = time.perf_counter()
                if all_alive is None and len(self.alive()) >= n:
                    all_alive = now - t0
                if returned is None and cmd.poll() is not None:
                    returned = now - t0
                    if cmd.returncode != 0:
                        raise PeerError(self.failure("start", cmd.returncode, log))
                if now - t0 > timeout:
                    cmd.kill()
                    raise PeerError(f"{n} processes not up within {timeout:.0f} s")
                time.sleep(POLL_START)
        self.daemon_pid()  # known from now on, for cleanup() should the run fail
        return StartTiming(all_alive, returned)

    def kill_child(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def stop(self, timeout: float = 60.0) -> StopTiming:
        """Run the stop command; return once no sleeper is left and the daemon is gone."""
        daemon = self.daemon_pid()
        log = self.workdir / "stop.log"
        with open(log, "wb") as out:
            t0 = time.perf_counter()
            cmd = self.popen(self.stop_cmd(), out)
            if not procs.wait_until(lambda: not self.alive(), timeout, POLL_START):
                raise PeerError(f"children still alive {timeout:.0f} s after stop")
            gone = time.perf_counter() - t0
            try:
                cmd.wait(timeout)
            except subprocess.TimeoutExpired as exc:
                cmd.kill()
                raise PeerError(f"stop command still running {timeout:.0f} s later") from exc
            returned = time.perf_counter() - t0
        if cmd.returncode != 0:
            raise PeerError(self.failure("stop", cmd.returncode, log))
        if daemon is not None and not procs.wait_until(lambda: not procs.is_running(daemon), 10):
            raise PeerError(f"daemon {daemon} still running after stop")
        return StopTiming(gone, returned)

    def cleanup(self) -> None:
        """Kill whatever of this run is left: the daemon, the children, anything else.

        Everything a peer runs names the working directory on its command line (the
        daemon its config) or the marker (the children), or runs in it; the daemon pid,
        if known, is killed too, in case the daemon rewrote its command line (procorch's
        is `python -m procorch.supervisor`). The daemon goes first: it would restart the
        children killed before it.
        """
        pid = self._daemon_pid
        if pid is not None and procs.create_time(pid) == self._daemon_started:
            procs.kill([pid])
        procs.kill(procs.pids_mentioning(str(self.workdir)) | procs.pids_in(self.workdir))
        procs.kill(self.alive())

    def popen(self, argv: list[str], out: object) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PATH=f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,  # a Ctrl-C at the terminal is the harness's to handle
        )

    def failure(self, what: str, code: int, log: Path) -> str:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        tail = " | ".join(lines[-3:]) or "no output"
        return f"{what} command exited {code}: {tail}"


def _pid_from_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class Supervisord(Peer):
    name = "supervisord"
    package = "supervisor"
    grouped: ClassVar[bool] = False  # the programs in one [group:stack] section
    fcgi: ClassVar[bool] = False  # a program with `listen` as an [fcgi-program:]

    @property
    def conf(self) -> Path:
        return self.workdir / "supervisord.conf"

    def write_stack(self, programs: Sequence[Program]) -> None:
        w = self.workdir
        sections = [
            f"""[unix_http_server]
file={w}/s.sock

[supervisord]
nodaemon=false
logfile={w}/supervisord.log
pidfile={w}/supervisord.pid
childlogdir={w}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{w}/s.sock
"""
        ]
        for program in programs:
            kind, socket, extra = "program", [], []
            if program.listen is not None and self.fcgi:
                # supervisord binds the socket and gives it to each copy as its stdin.
                kind, extra = "fcgi-program", ["--fd", "0"]
                socket = [f"socket=tcp://127.0.0.1:{program.listen}"]
            elif program.listen is not None:
                extra = ["--port", str(program.listen)]  # each copy binds it, SO_REUSEPORT
            lines = [
                f"[{kind}:{program.name}]",
                f"command={shlex.join([*program.argv, *extra])}",
                *socket,
                f"numprocs={program.replicas}",
                "process_name=%(program_name)s_%(process_num)02d",
                "autorestart=true",
            ]
            if program.env:
                pairs = (f"{k}={json.dumps(v)}" for k, v in program.env.items())
                lines.append("environment=" + ",".join(pairs))
            sections.append("\n".join(lines) + "\n")
        if self.grouped:
            names = ",".join(program.name for program in programs)
            sections.append(f"[group:stack]\nprograms={names}\n")
        self.conf.write_text("\n".join(sections))

    def _ctl(self, *args: str) -> list[str]:
        return [str(BIN_DIR / "supervisorctl"), "-c", str(self.conf), *args]

    def start_cmd(self) -> list[str]:
        return [str(BIN_DIR / "supervisord"), "-c", str(self.conf)]

    def status_cmd(self) -> list[str]:
        return self._ctl("status")

    def stop_cmd(self) -> list[str]:
        return self._ctl("shutdown")

    def reload_cmds(self) -> list[list[str]]:
        return [self._ctl("reread"), self._ctl("update")]

    def restart_cmd(self, program: Program) -> list[str]:
        if not self.grouped:
            return self._ctl("restart", f"{program.name}:*")
        copies = (f"stack:{program.name}_{i:02d}" for i in range(program.replicas))
        return self._ctl("restart", *copies)

    def _read_daemon_pid(self) -> int | None:
        return _pid_from_file(self.workdir / "supervisord.pid")


class SupervisordGroup(Supervisord):
    """supervisord with the stack's programs in one `[group:stack]`, the way its users
    manage a stack as a unit; `update` replaces a changed group whole (supervisor #1154)."""

    name = "supervisord-group"
    grouped = True


class SupervisordFcgi(Supervisord):
    """supervisord holding the service's socket itself, as an `[fcgi-program:]` (what
    uvicorn's docs suggest for supervisord: `--fd 0`); the socket is closed when the
    last process using it is gone."""

    name = "supervisord-fcgi"
    fcgi = True


class Circus(Peer):
    name = "circus"
    package = "circus"

    @property
    def conf(self) -> Path:
        return self.workdir / "circus.ini"

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.workdir}/c.sock"

    def write_stack(self, programs: Sequence[Program]) -> None:
        sections = [
            f"""[circus]
endpoint = {self.endpoint}
pubsub_endpoint = ipc://{self.workdir}/p.sock
statsd = False
"""
        ]
        for program in programs:
            python, *args = program.argv
            lines = [f"[watcher:{program.name}]", f"cmd = {python}"]
            args_text = shlex.join(args)
            if program.listen is not None:
                # circus binds the socket and passes its fd to each process.
                args_text += f" --fd $(circus.sockets.{program.name})"
            lines += [f"args = {args_text}", f"numprocesses = {program.replicas}"]
            if program.listen is not None:
                lines.append("use_sockets = True")
            if program.env:
                env = (f"{k} = {v}" for k, v in program.env.items())
                lines += ["", f"[env:{program.name}]", *env]
            if program.listen is not None:
                lines += ["", f"[socket:{program.name}]", "host = 127.0.0.1"]
                lines.append(f"port = {program.listen}")
            sections.append("\n".join(lines) + "\n")
        self.conf.write_text("\n".join(sections))

    def _ctl(self, *args: str) -> list[str]:
        return [str(BIN_DIR / "circusctl"), "--endpoint", self.endpoint, *args]

    def start_cmd(self) -> list[str]:
        return [
            str(BIN_DIR / "circusd"),
            "--daemon",
            "--pidfile",
            str(self.workdir / "circus.pid"),
            "--log-output",
            str(self.workdir / "circus.log"),
            str(self.conf),
        ]

    def status_cmd(self) -> list[str]:
        return self._ctl("status")

    def stop_cmd(self) -> list[str]:
        return self._ctl("quit")

    def reload_cmds(self) -> list[list[str]]:
        return [self._ctl("reloadconfig")]

    def restart_cmd(self, program: Program) -> list[str]:
        return self._ctl("restart", program.name)

    def _read_daemon_pid(self) -> int | None:
        return _pid_from_file(self.workdir / "circus.pid")


class Procorch(Peer):
    name = "procorch"
    package = "procorch"
    start_waits_for_ready = True

    @property
    def conf(self) -> Path:
        return self.workdir / "procorch.toml"

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    def write_stack(self, programs: Sequence[Program]) -> None:
        sections = [f"[procorch]\nrun_dir = {json.dumps(str(self.run_dir))}\n"]
        for program in programs:
            command = ", ".join(json.dumps(arg) for arg in program.argv)
            lines = [
                f"[services.{program.name}]",
                f"command = [{command}]",
                f"replicas = {program.replicas}",
            ]
            if program.env:
                env = ", ".join(f"{k} = {json.dumps(v)}" for k, v in program.env.items())
                lines.append(f"env = {{ {env} }}")
            if program.listen is not None:
                lines.append(f'listen = ["tcp://127.0.0.1:{program.listen}"]')
            if program.health_tcp is not None:
                lines += [f"\n[services.{program.name}.health]", f"tcp = {program.health_tcp}"]
            sections.append("\n".join(lines) + "\n")
        self.conf.write_text("\n".join(sections))

    def _cli(self, *args: str) -> list[str]:
        return [str(BIN_DIR / "procorch"), *args, "-c", str(self.conf)]

    def start_cmd(self) -> list[str]:
        return self._cli("up")

    def status_cmd(self) -> list[str]:
        return self._cli("status")

    def stop_cmd(self) -> list[str]:
        return self._cli("down")

    def reload_cmds(self) -> list[list[str]]:
        return [self._cli("reload")]

    def restart_cmd(self, program: Program) -> list[str]:
        return self._cli("restart", "--rolling", program.name)

    def _read_daemon_pid(self) -> int | None:
        pid = _pid_from_file(self.run_dir / "procorch.pid")
        if pid is not None:
            return pid
        try:
            out = subprocess.run(
                self._cli("status", "--json"), capture_output=True, timeout=10, check=True
            ).stdout
            return int(json.loads(out)["supervisor"]["pid"])
        except (subprocess.SubprocessError, OSError, ValueError, KeyError, TypeError):
            return None


ALL_PEERS: tuple[type[Peer], ...] = (Supervisord, Circus, Procorch)
VARIANTS: tuple[type[Peer], ...] = (
    SupervisordGroup,
    SupervisordFcgi,
)  # bench/supervisors/live.py's
