"""Configuration: what procorch.toml (and .env / the environment) say, validated.

This module owns the schema. `load_config` turns a file (or no file at all, for the
built-in default stack) into a frozen `Config`; anything wrong raises `ConfigError`
with one line naming the file, the key and the problem.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from procorch import templating
from procorch.locate import SOCKET_NAME, config_base, default_config
from procorch.locate import run_dir as _run_dir
from procorch.redaction import redact
from procorch.sizes import parse_size

MAX_SOCKET_PATH = 107  # sizeof(sun_path) - 1 on Linux
SERVICE_SOCKET_DIR = "sock"  # in the run directory; short, because socket paths are limited
RESTART_POLICIES = ("always", "on-failure", "never")
STDERR_MODES = ("merged", "separate")  # a service's stderr: in its log, or a file of its own
LOG_ROTATIONS = ("size", "hourly", "daily")  # by size only, or also at each hour / midnight
EXIT_NOTE_DIR = "exits"  # in the run directory: why each Python replica's last process died


def exit_note(run_dir: Path, service: str, replica: int) -> Path:
    """Where a Python replica that dies of an exception writes its last line, for the
    supervisor to report as the reason (the output pipe mixes it with everything else)."""
    return run_dir / EXIT_NOTE_DIR / f"{service}.{replica}"


def service_socket(run_dir: Path, service: str, replica: int) -> Path:
    """Where replica `replica` of a Python service takes requests: a stable address, so
    a restarted replica is found again without telling its callers."""
    return run_dir / SERVICE_SOCKET_DIR / f"{service}.{replica}"


class ConfigError(Exception):
    """A configuration problem; str() is the one line shown to the user."""


@dataclass(frozen=True)
class HealthCheck:
    """An optional readiness/liveness probe for command services."""

    tcp: int | None = None  # a port to connect to on `host`
    http: str | None = None  # a URL; any 2xx/3xx answer is healthy
    host: str = "127.0.0.1"
    timeout: float = 1.0


@dataclass(frozen=True)
class ServiceConfig:
    """One `[services.NAME]` table."""

    name: str
    module: str | None = None  # "pkg.mod:Class" for a Python service
    command: tuple[str, ...] | None = None  # argv for any other program
    replicas: int = 1
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    depends_on: tuple[str, ...] = ()
    restart: str = "always"
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    start_seconds: float = 1.0  # a command must stay up this long to count as running
    heartbeat_timeout: float | None = None  # None: the global setting
    fatal_retry: float | None = None  # None: the global setting
    health: HealthCheck | None = None
    # sockets the daemon binds and hands down (fds 3...): "tcp://HOST:PORT", "unix:///abs"
    listen: tuple[str, ...] = ()
    stderr: str = "merged"  # or "separate": NAME.N.err.log
    log_timestamps: bool = False  # or [procorch] log_timestamps
    base_port: int | None = None  # {port} in command and env: base_port + replica number
    max_rss: int | None = None  # bytes; a replica over it at two checks in a row is restarted
    user: str | None = None  # run as this user (a name or a uid)...
    group: str | None = None  # ...and group: the daemon must be root (see guardrails.py)
    umask: int | None = None  # None: the user's for a command, the daemon's 077 for Python
    rlimits: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # (soft, hard)
    env_file: Path | None = None  # its values are in `env` (see `_service`)
    queues: tuple[str, ...] | None = None  # a JobWorker's job queues (None: every queue)

    @property
    def is_python(self) -> bool:
        return self.module is not None

    def argv(self, replica: int) -> tuple[str, ...] | None:
        """The command of replica number `replica`, its placeholders filled in."""
        if self.command is None:
            return None
        return tuple(templating.expand(arg, replica, self.base_port) for arg in self.command)

    def environment(self, replica: int) -> dict[str, str]:
        """What this service adds to a replica's environment, placeholders filled in."""
        return {k: templating.expand(v, replica, self.base_port) for k, v in self.env.items()}


@dataclass(frozen=True)
class Settings:
    """The global `[procorch]` table."""

    run_dir: Path
    check_interval: float = 5.0  # as the original SERVICE_CHECK_INTERVAL and circus check_delay
    heartbeat_timeout: float = 10.0
    max_restarts: int = 5
    restart_window: float = 60.0
    backoff_max: float = 5.0
    fatal_retry: float = 60.0  # seconds in FATAL before another try (0: never), as circus' retry_in
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    log_level: str = "INFO"
    synchronous: str = "normal"  # the services' SQLite databases, as [jobs] synchronous
    log_timestamps: bool = False  # `logs` and `up --foreground` show each line's time
    log_rotate: str = "size"  # also roll logs over every "hourly" / "daily" (local time)


# What `[[hooks]] on` may name: the daemon's events (supervisor/daemon.py writes them to
# events.log). The hooks' own reports (hook-dropped, hook-failed) are not among them, so
# a hook can never feed itself.
HOOK_EVENTS = (
    "spawned",
    "running",
    "exited",
    "backoff",
    "stopping",
    "stopped",
    "stop-timeout",
    "fatal",
    "fatal-retry",
    "unhealthy",
    "reclaimed",
    "disk-full",
    "disk-ok",
    "daemon-start",
    "daemon-stopping",
    "state-rewritten",
    "logs-reopened",
    "signalled",
)


@dataclass(frozen=True)
class HookConfig:
    """One `[[hooks]]` table: what runs when the daemon writes one of the `on` events."""

    on: tuple[str, ...]
    command: tuple[str, ...] | None = None  # gets the event as JSON on stdin
    url: str | None = None  # gets the event as the body of a POST
    timeout: float = 10.0  # a run still going after this is killed (its process group)
    max_runs: int = 10  # at most this many runs...
    window: float = 60.0  # ...within this many seconds; the rest are dropped and counted


GATEWAY = "procorch.gateway.service:Gateway"
GATEWAY_NAME = "Gateway"
# `[gateway] workers = "auto"` (the default) runs one gateway process per CPU, at most this many
MAX_AUTO_WORKERS = 4


def auto_workers() -> int:
    """How many gateway processes `workers = "auto"` runs: one per CPU this process may
    use (each pins itself to one, `pin_cpu`), at most MAX_AUTO_WORKERS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_AUTO_WORKERS))


@dataclass(frozen=True)
class GatewaySettings:
    """The `[gateway]` table: the optional HTTP gateway, run as the service `Gateway`."""

    enabled: bool = False
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 5000
    token: str | None = None  # bearer token every request but /health must carry
    max_body: int = 1024 * 1024  # bytes; a bigger request body is refused with 413
    threads: int = 8  # the WSGI server's worker threads
    # gateway processes, all serving the one listening socket; "auto" (the default): one
    # per CPU, at most MAX_AUTO_WORKERS (a Python process uses about one core, its GIL's)
    workers: int = field(default_factory=auto_workers)
    pin_cpu: bool = True  # each gateway process on one CPU: its threads share one GIL
    timeout: float = 5.0  # seconds to wait for a service before answering 504
    # The most threads waiting on one service at once; then its endpoints answer 503 at
    # once, so a hung service cannot take every thread. 0: half of `threads`.
    service_threads: int = 0
    request_deadline: float = 10.0  # seconds a client has to send a whole request
    connection_limit: int = 1000  # open connections; beyond it, new ones wait in the backlog

    @property
    def service_limit(self) -> int:
        """`service_threads`, or half the threads by default (at least one)."""
        return self.service_threads or max(1, self.threads // 2)

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can connect (a name is judged by what it resolves to)."""
        import ipaddress
        import socket

        try:
            infos = socket.getaddrinfo(self.host, None, type=socket.SOCK_STREAM)
        except OSError:
            return False
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


JOB_WORKER = "procorch.jobs.worker:JobWorker"
JOB_WORKER_NAME = "JobWorker"
MAX_INT64 = 2**63 - 1  # job inputs, moduli and outputs are SQLite INTEGERs
MAX_PRIORITY = 1_000_000  # a job's priority is from -MAX_PRIORITY to MAX_PRIORITY
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # a job queue's name
SYNCHRONOUS = ("normal", "full")


@dataclass(frozen=True)
class JobsSettings:
    """The `[jobs]` table: the job queue and its workers."""

    backend: str = "sqlite"  # or "redis://HOST:PORT/DB"
    workers: int = 2  # replicas of the JobWorker service
    delay: float = 0.0  # simulated work per job, seconds
    failure_rate: float = 0.0  # simulated failures, 0.0 to 1.0
    max_attempts: int = 3
    timeout: float = 60.0  # a job running longer is killed with its worker; a failed attempt
    max_n: int = 10**18
    mod: int = 1_000_000_007
    synchronous: str = "normal"  # SQLite: "normal" survives crashes, "full" power loss too
    # name -> {"target": "module:function", and any of FUNCTION_POLICY's keys}
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    modules: tuple[str, ...] = ()  # modules whose @procorch.job functions are registered
    # the policy of every function, unless its own entry says otherwise
    backoff: str = "exponential"  # or "fixed": the delay before each retry
    retry_delay: float = 0.1  # seconds before the first retry (every one, if fixed)
    backoff_max: float = 10.0  # seconds at most between two attempts
    jitter: float = 0.0  # up to this share of a delay added at random (0.0 to 1.0)
    priority: int = 0  # higher first among due jobs
    result_ttl: float = 7 * 86400.0  # seconds a finished job is kept; -1: forever
    queue: str = "default"
    # name -> the validated table: function, cron or every (seconds), args, kwargs, timezone
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def redis_url(self) -> str | None:
        return None if self.backend == "sqlite" else self.backend


# The built-in stack's jobs show the original's simulated workload: slow and a little flaky.
_DEMO_JOBS = JobsSettings(delay=0.5, failure_rate=0.05)


@dataclass(frozen=True)
class Config:
    path: Path | None  # None: no file, the built-in default stack
    settings: Settings
    services: tuple[ServiceConfig, ...]  # in start order (dependencies first)
    gateway: GatewaySettings = GatewaySettings()
    jobs: JobsSettings = _DEMO_JOBS
    hooks: tuple[HookConfig, ...] = ()

    def service(self, name: str) -> ServiceConfig:
        """The service called `name`, matched case-insensitively."""
        for svc in self.services:
            if svc.name.lower() == name.lower():
                return svc
        raise KeyError(name)

    def to_json(self) -> str:
        """The resolved config, as the CLI hands it to the daemon it starts."""
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> Config:
        """The inverse of `to_json`, for an already validated config (no checks again)."""
        data = json.loads(text)
        settings = data["settings"]
        services = []
        for svc in data["services"]:
            services.append(
                ServiceConfig(
                    **{
                        **svc,
                        "command": tuple(svc["command"]) if svc["command"] else None,
                        "cwd": Path(svc["cwd"]) if svc["cwd"] else None,
                        "depends_on": tuple(svc["depends_on"]),
                        "stop_signal": signal.Signals(svc["stop_signal"]),
                        "health": HealthCheck(**svc["health"]) if svc["health"] else None,
                        "listen": tuple(svc.get("listen", ())),
                        "rlimits": {k: tuple(v) for k, v in svc["rlimits"].items()},
                        "env_file": Path(svc["env_file"]) if svc["env_file"] else None,
                        "queues": tuple(svc["queues"]) if svc["queues"] else None,
                    }
                )
            )
        return cls(
            path=Path(data["path"]) if data["path"] else None,
            settings=Settings(**{**settings, "run_dir": Path(settings["run_dir"])}),
            services=tuple(services),
            gateway=GatewaySettings(**data["gateway"]),
            jobs=JobsSettings(**{**data["jobs"], "modules": tuple(data["jobs"]["modules"])}),
            hooks=tuple(
                HookConfig(
                    **{
                        **hook,
                        "on": tuple(hook["on"]),
                        "command": tuple(hook["command"]) if hook["command"] else None,
                    }
                )
                for hook in data.get("hooks", ())
            ),
        )


# Environment variables that override a setting: NAME -> (section, key). They may also
# come from a `.env` file; the real environment wins over it, and both win over the file.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "SERVICE_CHECK_INTERVAL": ("procorch", "check_interval"),
    "HEARTBEAT_TIMEOUT": ("procorch", "heartbeat_timeout"),
    "MAX_RESTART_ATTEMPTS": ("procorch", "max_restarts"),
    "LOG_LEVEL": ("procorch", "log_level"),
    "GATEWAY_HOST": ("gateway", "host"),
    "GATEWAY_PORT": ("gateway", "port"),
    "PROCORCH_TOKEN": ("gateway", "token"),
}

EXAMPLE_TOML = """\
# procorch.toml: the services procorch runs and keeps alive.
#
# Commented-out lines show the defaults. Relative paths are relative to this file.
# These environment variables (or the same names in a .env file beside this file)
# override the settings marked with them; the real environment wins over .env:
#   SERVICE_CHECK_INTERVAL, HEARTBEAT_TIMEOUT, MAX_RESTART_ATTEMPTS, LOG_LEVEL,
#   GATEWAY_HOST, GATEWAY_PORT, PROCORCH_TOKEN

[procorch]
# run_dir = ".procorch"        # pid file, socket, logs and state (--run-dir wins)
# check_interval = 5.0         # seconds between health checks  (SERVICE_CHECK_INTERVAL)
# heartbeat_timeout = 10.0     # restart a Python service silent this long (HEARTBEAT_TIMEOUT)
# max_restarts = 5             # FATAL after more crash-loop deaths (MAX_RESTART_ATTEMPTS)
# restart_window = 60.0        # ...within this many seconds (a death less than a second
#                              #   after running; one that ran longer is always restarted)
# backoff_max = 5.0            # longest pause between restarts, in seconds
# fatal_retry = 60.0           # seconds a FATAL service waits before another try (0: never)
# log_max_bytes = 10485760     # rotate a log file at this size (at least 1024)
# log_backups = 3              # rotated log files to keep
# log_level = "INFO"           # DEBUG, INFO, WARNING, ERROR or CRITICAL   (LOG_LEVEL)
# synchronous = "normal"       # the services' SQLite data: "normal" survives process
#                              #   crashes, "full" a power loss too (each commit synced)
# log_timestamps = false       # `logs` and `up --foreground` show each line's time
# log_rotate = "size"          # also roll logs over "hourly" or "daily" (local time)

# Each [services.NAME] table is one service; NAME is letters, digits, '_', '-' and '.',
# and ignores case. Give exactly one of `module` (a Python service) or `command`.

# A Python service: procorch imports the class and runs it in a process of its own.
# These three are the built-in services, the default stack when no file says otherwise.
[services.UserService]
module = "procorch.services.users:UserService"
# replicas = 1                 # how many copies to run (1 to 1000)
# env = {}                     # extra environment variables, e.g. { GREETING = "hi" }
# cwd = "some/dir"             # working directory (default: unset, inherit procorch's)
# depends_on = []              # services to start before this one
# restart = "always"           # "always", "on-failure" (non-zero exit) or "never"
# stop_signal = "TERM"         # asks it to stop: a name ("INT", "SIGTERM") or a number
# stop_timeout = 10.0          # seconds to wait after stop_signal before killing it
# start_seconds = 1.0          # it must stay up this long to count as running
# heartbeat_timeout = 10.0     # default: the [procorch] heartbeat_timeout
# stderr = "merged"            # "separate": stderr to NAME.N.err.log (`logs` shows both)
# log_timestamps = false       # show its lines' times (also on with [procorch]'s)
# env_file = ".env.users"      # more environment, read with python-dotenv (env wins)
# max_rss = "300M"             # restarted when its memory stays above this (K, M, G)
# umask = "077"                # default: 077 for a Python service, yours for a command
# rlimits = { nofile = 4096, core = 0, as = "2G" }  # a soft limit or [soft, hard]

[services.NotificationService]
module = "procorch.services.notifications:NotificationService"

[services.OrderService]
module = "procorch.services.orders:OrderService"
depends_on = ["UserService"]   # it asks UserService about every order's user

# Any other program: its argv as a list, or as one string split the way a shell would.
[services.web]
command = "python3 -m http.server 8000"
replicas = 1                   # more would fight over port 8000
restart = "on-failure"
depends_on = ["UserService"]   # start after UserService
env = { PYTHONUNBUFFERED = "1" }
# fatal_retry = 300.0          # its own cool-off after FATAL (default: [procorch] fatal_retry)
# listen = ["tcp://127.0.0.1:8000", "unix://web.sock"]  # bound by procorch, handed to
#                              #   every replica as fds 3... (LISTEN_FDS, as systemd does)
# user = "www-data"            # run as this user...
# group = "www-data"           # ...and group (procorch must run as root)
# base_port = 8000             # "{port}" in command or env is base_port + "{replica}",
#                              #   the replica's number: "--port", "{port}" (write {{ for {)

# Optional, for command services only: the service is healthy while this answers.
[services.web.health]
tcp = 8000                     # a port to connect to...
# http = "http://127.0.0.1:8000/"  # ...or instead a URL answering 2xx or 3xx
# host = "127.0.0.1"           # where to connect, for tcp
# timeout = 1.0                # seconds per attempt

# The HTTP gateway: the services and the job queue over HTTP (JSON), run as the
# supervised service `Gateway`. `procorch up --gateway` turns it on for one run.
[gateway]
# enabled = false              # serve the HTTP gateway
# host = "127.0.0.1"           # non-loopback without a token warns  (GATEWAY_HOST)
# port = 5000                  # (GATEWAY_PORT)
# token = "16+ characters"     # then all but /health need "Authorization: Bearer TOKEN"
#                              #   (PROCORCH_TOKEN); "auto": one made and kept in the run
#                              #   directory (`procorch gateway-token` prints it)
# max_body = 1048576           # largest request body in bytes; bigger gets 413
# threads = 8                  # WSGI server threads
# workers = "auto"             # gateway processes sharing the port (each with its threads);
#                              #   "auto": one per CPU, at most 4
# pin_cpu = true               # keep each gateway process on one CPU (see the README)
# timeout = 5.0                # seconds to wait for a service; slower gets 504
# service_threads = 0          # most threads one service may hold waiting (0: threads / 2)
# request_deadline = 10.0      # seconds a client has to send its whole request
# connection_limit = 1000      # open connections at most; more wait in the backlog

# The job queue (`procorch job ...`). With this table, the JobWorker service runs
# beside the services above (replicas = workers); without it, only in the built-in stack.
[jobs]
# backend = "sqlite"           # jobs.db in the run directory, or "redis://HOST:PORT/DB"
# workers = 2                  # JobWorker replicas
delay = 0.5                    # simulated work per job, seconds (default 0)
failure_rate = 0.05            # share of attempts that fail on purpose, 0.0 to 1.0 (default 0)
# max_attempts = 3             # a failed attempt is retried with backoff until this many
# timeout = 60.0               # seconds; a job running longer is killed with its worker
# max_n = 1000000000000000000  # largest n a job may ask for
# mod = 1000000007             # default modulus of F(n) mod m (at least 2)
# synchronous = "normal"       # SQLite: "normal" survives process crashes, "full" power loss
# modules = []                 # modules whose @procorch.job functions can be run
# Every job function's policy, unless its own entry in [jobs.functions] says otherwise:
# backoff = "exponential"      # the delay before each retry doubles, or "fixed"
# retry_delay = 0.1            # seconds before the first retry (a duration: "5s", "1m")
# backoff_max = 10.0           # seconds at most between two attempts
# jitter = 0.0                 # up to this share of a delay added at random (0.0 to 1.0)
# priority = 0                 # higher first among due jobs
# result_ttl = "7d"            # a finished job is deleted this long after (-1: kept forever)
# queue = "default"            # the queue its jobs go to
#
# JobWorker replicas take every queue. To give workers queues of their own, declare
# JobWorker services (module = "procorch.jobs.worker:JobWorker"), each with e.g.
# queues = ["default", "mail"]

# Your own job functions by name (`procorch job submit NAME --args '[...]'`): only the
# functions registered here or with @procorch.job in `modules` can ever be run. A string,
# or a table with `target` and any of the policy keys above.
# [jobs.functions]
# square = "myapp.jobs:square"
# send = { target = "myapp.mail:send", max_attempts = 5, timeout = 30, queue = "mail" }

# Jobs the daemon submits on a timetable, each tick exactly once (`procorch job
# schedules` lists them): `cron` (five fields; UTC, or `timezone = "Europe/Paris"`) or
# `every` ("30s", "5m", "1h", "1d": multiples of it since 1970, UTC), with `args` and
# `kwargs`. Only the latest tick missed while no daemon ran fires, at the next start.
# [jobs.schedules]
# nightly = { function = "square", cron = "0 3 * * *", args = [12] }

# Hooks: run a command (the event as JSON on stdin) or POST to a URL (the event as the
# body) when the daemon writes one of the `on` events. Off the event loop, killed after
# `timeout`, at most `max_runs` per `window` seconds (the rest are dropped and counted).
# [[hooks]]
#   on = ["fatal", "unhealthy"]  # spawned, running, exited, backoff, stopped, fatal, ...
#   command = ["notify-send", "procorch"]  # gets the event as JSON on stdin; or instead
#   url = "https://example.com/hook"       # gets the event POSTed as JSON
#   timeout = 10.0
#   max_runs = 10
#   window = 60.0
"""

# What runs when no file (or a file without services) says otherwise; the JobWorker
# service is added by `_with_job_worker`.
_DEFAULT_SERVICES = (
    ServiceConfig(name="UserService", module="procorch.services.users:UserService"),
    ServiceConfig(
        name="NotificationService", module="procorch.services.notifications:NotificationService"
    ),
    ServiceConfig(
        name="OrderService",
        module="procorch.services.orders:OrderService",
        depends_on=("UserService",),
    ),
)
# Modules that ship with procorch: `up` need not check that they import.
BUILTIN_MODULES = frozenset(
    {*(svc.module for svc in _DEFAULT_SERVICES if svc.module), JOB_WORKER, GATEWAY}
)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_TOML_POSITION = re.compile(
    r"(?P<problem>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)"
)


def load_config(
    path: Path | None = None,
    run_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    enable_gateway: bool = False,
) -> Config:
    """Read, validate and return the configuration; raise `ConfigError` if it is wrong.

    `path` None means `procorch.toml` in the current directory, or the built-in default
    stack if there is none. `run_dir` (the CLI's --run-dir) beats the file's `run_dir`.
    `environ` (default `os.environ`) and a `.env` file beside the config file override
    the settings named in `ENV_OVERRIDES`; an empty value counts as unset.
    `enable_gateway` (the CLI's `up --gateway`) turns the gateway on whatever the file says.
    """
    environ = os.environ if environ is None else environ
    if path is None:
        path = default_config()
    base = config_base(path)
    if path is None:
        data: dict[str, Any] = {}
        env_file = Path(".env")
        root = _Where("(built-in defaults)")  # never shown: no data
    else:
        root = _Where(str(path))  # as the user gave it: short and recognisable
        data = _read_toml(Path(path), root)
        env_file = Path(path).parent / ".env"  # also as given, for its error messages
        path = Path(os.path.abspath(path))
    top = _fields(data, root, _top_level_parsers(base))

    sections = {"procorch": top.get("procorch", {}), "gateway": top.get("gateway", {})}
    _apply_overrides(sections, _override_layers(env_file, environ))
    configured_run_dir = sections["procorch"].pop("run_dir", None)
    chosen = _run_dir(run_dir, configured_run_dir, base)
    where = _Where("--run-dir") if run_dir is not None else root.key("procorch").key("run_dir")
    jobs = JobsSettings(**top["jobs"]) if "jobs" in top else _DEMO_JOBS
    _check_scheduled_functions(jobs, root.key("jobs").key("schedules"))
    services = top.get("services", _DEFAULT_SERVICES)
    if services is _DEFAULT_SERVICES or "jobs" in top:
        services = _with_job_worker(services, jobs, root.key("jobs"))
    gateway = GatewaySettings(**sections["gateway"])
    if gateway.enabled or enable_gateway:
        gateway = replace(gateway, enabled=True)
        where = root.key("gateway")
        services = _with_builtin(services, GATEWAY, GATEWAY_NAME, gateway.workers, where)
    _check_sockets_fit(chosen, services, where)
    settings = Settings(run_dir=chosen, **sections["procorch"])
    return Config(
        path=path,
        settings=settings,
        services=services,
        gateway=gateway,
        jobs=jobs,
        hooks=top.get("hooks", ()),
    )


def load_like(
    running: Config,
    path: Path | None,
    run_dir: Path | None = None,
    *,
    gateway: bool = False,
    token: bool = False,
    loaded: Config | None = None,
) -> Config:
    """`path` read again for a daemon running `running` (a reload): what `up` was told
    beyond the file (`--gateway`, `--token`, `--run-dir`) still holds, and `gateway` and
    `token` (this `up`'s own flags) are added. `loaded`, the file as just read with
    `gateway`, is reused when the daemon asks for nothing it lacks. ConfigError if bad."""
    run_dir = run_dir or running.settings.run_dir
    gateway = gateway or running.gateway.enabled
    if (
        loaded is not None
        and (loaded.gateway.enabled or not gateway)
        and loaded.settings.run_dir == running.settings.run_dir
    ):
        cfg = loaded
    else:
        cfg = load_config(path, run_dir=run_dir, enable_gateway=gateway)
    if (token or running.gateway.token == AUTO_TOKEN) and not cfg.gateway.token:
        cfg = replace(cfg, gateway=replace(cfg.gateway, token=AUTO_TOKEN))
    return cfg


def _with_job_worker(
    services: tuple[ServiceConfig, ...], jobs: JobsSettings, where: _Where
) -> tuple[ServiceConfig, ...]:
    """Add the JobWorker service (replicas = `workers`) unless the file runs it already."""
    return _with_builtin(services, JOB_WORKER, JOB_WORKER_NAME, jobs.workers, where)


def _with_builtin(
    services: tuple[ServiceConfig, ...], module: str, name: str, replicas: int, where: _Where
) -> tuple[ServiceConfig, ...]:
    """Add a built-in service after the others, unless the file runs it already."""
    if any(svc.module == module for svc in services):
        return services
    if any(svc.name.lower() == name.lower() for svc in services):
        raise where.error(f"a service is already called {name!r}, a built-in service's name")
    return (*services, ServiceConfig(name=name, module=module, replicas=replicas))


# --- where a value came from -------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """Where a value came from, for error messages: a source and a dotted key path."""

    source: str  # the config file as the user named it, "environment" or a .env path
    path: str = ""
    text: bool = False  # values are raw strings (environment), so numbers need parsing

    def key(self, name: str) -> _Where:
        return replace(self, path=f"{self.path}.{name}" if self.path else name)

    def error(self, problem: str) -> ConfigError:
        line = ": ".join(part for part in (self.source, self.path, problem) if part)
        # One line whatever went in: the CLI prints it as a single message.
        return ConfigError(" ".join(line.splitlines()))


_Parser = Callable[[Any, _Where], Any]


# --- reading -----------------------------------------------------------------------


def _read_toml(path: Path, where: _Where) -> dict[str, Any]:
    import tomllib  # only when a file is read: the daemon gets its config as JSON

    try:
        # utf-8-sig: tolerate the byte-order mark some Windows editors write.
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise where.error("no such file") from None
    except UnicodeDecodeError as exc:
        raise where.error(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise where.error(f"cannot read ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = " ".join(str(exc).split())
        match = _TOML_POSITION.fullmatch(message)
        if match is None:
            raise where.error(f"invalid TOML ({message})") from None
        at = f"line {match['line']}, column {match['column']}" if match["line"] else "end of file"
        raise replace(where, path=at).error(f"invalid TOML ({match['problem']})") from None


def _read_dotenv(path: Path) -> dict[str, str | None]:
    from dotenv import dotenv_values  # only here: importing it slows every CLI start

    try:
        return dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise _Where(str(path)).error(f"cannot read ({exc})") from None


def _override_layers(
    env_file: Path, environ: Mapping[str, str]
) -> list[tuple[Mapping[str, str | None], _Where]]:
    """The override sources, strongest first."""
    layers: list[tuple[Mapping[str, str | None], _Where]] = [
        (environ, _Where("environment", text=True))
    ]
    if env_file.is_file():
        layers.append((_read_dotenv(env_file), _Where(str(env_file), text=True)))
    return layers


def _apply_overrides(
    sections: dict[str, dict[str, Any]],
    layers: list[tuple[Mapping[str, str | None], _Where]],
) -> None:
    for variable, (section, key) in ENV_OVERRIDES.items():
        for values, where in layers:
            raw = values.get(variable)
            # Only the winning value is validated: a bad one that is overridden is harmless.
            if raw:  # unset and empty both fall through to the next layer
                parse = _SECTION_PARSERS[section][key]
                sections[section][key] = parse(raw, where.key(variable))
                break


def _check_sockets_fit(run_dir: Path, services: Iterable[ServiceConfig], where: _Where) -> None:
    """A Unix socket path has room for 107 bytes: say so now, not as an OSError later."""
    paths = [(run_dir / SOCKET_NAME, "its control socket")]
    paths += [
        (service_socket(run_dir, svc.name, svc.replicas - 1), f"the socket of {svc.name}")
        for svc in services
        if svc.is_python
    ]
    for path, what in paths:
        length = len(os.fsencode(path))
        if length > MAX_SOCKET_PATH:
            raise where.error(
                f"{run_dir} is too deep for {what} ({length} bytes, at most "
                f"{MAX_SOCKET_PATH}): choose a shorter run directory"
            )


# --- tables ------------------------------------------------------------------------


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    import difflib  # lazy, like shlex and urllib here: the daemon (JSON config) needs none

    by_lower = {candidate.lower(): candidate for candidate in candidates}
    close = difflib.get_close_matches(word.lower(), by_lower, n=1)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def _fields(value: Any, where: _Where, parsers: Mapping[str, _Parser]) -> dict[str, Any]:
    """Parse a table whose keys must all be in `parsers`; only keys present are returned."""
    fields = {}
    for key, item in _table(value, where).items():
        if key not in parsers:
            raise where.error(f"unknown key {key!r}{_did_you_mean(key, parsers)}")
        fields[key] = parsers[key](item, where.key(key))
    return fields


def _exactly_one(fields: Mapping[str, Any], where: _Where, first: str, second: str) -> None:
    if first in fields and second in fields:
        raise where.error(f"give either `{first}` or `{second}`, not both")
    if first not in fields and second not in fields:
        raise where.error(f"missing `{first}` or `{second}`")


def _top_level_parsers(base: Path) -> dict[str, _Parser]:
    return {
        "procorch": partial(_fields, parsers=_SETTINGS_PARSERS),
        "services": partial(_services, base=base),
        "gateway": partial(_fields, parsers=_GATEWAY_PARSERS),
        "jobs": partial(_fields, parsers=_JOBS_PARSERS),
        "hooks": _hooks,
    }


def _hooks(value: Any, where: _Where) -> tuple[HookConfig, ...]:
    """`[[hooks]]`: a list of tables, each with `on` and one of `command` or `url`."""
    if not isinstance(value, list):
        raise where.error(f"expected [[hooks]] tables, got {_show(value)}")
    hooks = []
    for i, item in enumerate(value):
        at = replace(where, path=f"{where.path}[{i}]")
        fields = _fields(item, at, _HOOK_PARSERS)
        _exactly_one(fields, at, "command", "url")
        if "on" not in fields:
            raise at.error("missing `on` (the events that run it)")
        hooks.append(HookConfig(**fields))
    return tuple(hooks)


def _hook_events(value: Any, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(e, str) for e in value):
        raise where.error(f"expected a non-empty list of event names, got {_show(value)}")
    for event in value:
        if event not in HOOK_EVENTS:
            hint = _did_you_mean(event, HOOK_EVENTS)
            raise where.error(f"unknown event {event!r}{hint} (known: {', '.join(HOOK_EVENTS)})")
    return tuple(dict.fromkeys(value))


def _services(value: Any, where: _Where, *, base: Path) -> tuple[ServiceConfig, ...]:
    table = _table(value, where)
    if not table:
        return _DEFAULT_SERVICES
    parsers = {
        **_SERVICE_PARSERS,
        "cwd": partial(_directory, base=base),
        "listen": partial(_listen, base=base),
        "env_file": partial(_env_file, base=base),
    }
    names: dict[str, str] = {}  # lower-cased -> as written
    services = []
    for name, body in table.items():
        _check_service_name(name, names, where)
        names[name.lower()] = name
        services.append(_service(name, body, where.key(name), parsers))
    services = [
        _resolve_dependencies(svc, names, where.key(svc.name).key("depends_on")) for svc in services
    ]
    return _start_order(services, where)


def _check_service_name(name: str, seen: Mapping[str, str], where: _Where) -> None:
    if not _SERVICE_NAME.fullmatch(name):
        raise where.error(f"invalid service name {name!r} (use letters, digits, '_', '-' and '.')")
    if name.lower() in seen:
        raise where.key(name).error(
            f"same name as {seen[name.lower()]!r} (service names ignore case)"
        )


def _service(name: str, value: Any, where: _Where, parsers: Mapping[str, _Parser]) -> ServiceConfig:
    fields = _fields(value, where, parsers)
    _exactly_one(fields, where, "command", "module")
    if "queues" in fields and fields.get("module") != JOB_WORKER:
        raise where.key("queues").error(f"only a JobWorker service ({JOB_WORKER}) takes queues")
    if "health" in fields and "module" in fields:
        raise where.key("health").error("only command services can have a health check")
    if "listen" in fields and "module" in fields:
        raise where.key("listen").error("only command services can have `listen` sockets")
    for key in ("user", "group"):
        if key in fields and "module" in fields:
            # the run directory, which a Python service needs, is the daemon's alone
            raise where.key(key).error("only command services can run as another user or group")
    if "env_file" in fields:
        # Read now and kept in `env`, so a reload comparing configs sees an edited file
        # as a changed service (pm2 #3192). Its values are taken as written: their
        # braces are escaped, not placeholders. `env` wins over it.
        fields["env_file"], values = fields["env_file"]
        fields["env"] = {**escape_braces(values), **fields.get("env", {})}
    _check_templates(fields, where)
    return ServiceConfig(name=name, **fields)


def _check_templates(fields: Mapping[str, Any], where: _Where) -> None:
    """Placeholders ({replica}, {port}) in `command` and `env` must all be fillable."""
    base_port = fields.get("base_port")
    replicas = fields.get("replicas", 1)
    if base_port is not None and base_port + replicas - 1 > 65535:
        raise where.key("base_port").error(
            f"{base_port} + {replicas - 1} (the last replica's port) is above 65535"
        )
    values = [(where.key("command"), arg) for arg in fields.get("command", ())]
    values += [(where.key("env").key(k), v) for k, v in fields.get("env", {}).items()]
    for at, value in values:
        problem = templating.problem(value, base_port)
        if problem:
            raise at.error(problem)


def _health(value: Any, where: _Where) -> HealthCheck:
    fields = _fields(value, where, _HEALTH_PARSERS)
    _exactly_one(fields, where, "tcp", "http")
    if "http" in fields and "host" in fields:
        # Rejected rather than ignored: the URL already names the host.
        raise where.key("host").error("only used with `tcp` (the `http` URL names the host)")
    return HealthCheck(**fields)


def _resolve_dependencies(
    svc: ServiceConfig, names: Mapping[str, str], where: _Where
) -> ServiceConfig:
    """Replace `depends_on` names, which ignore case, by the services' real names."""
    resolved = []
    for wanted in svc.depends_on:
        if wanted.lower() not in names:
            raise where.error(f"unknown service {wanted!r}{_did_you_mean(wanted, names.values())}")
        resolved.append(names[wanted.lower()])
    return replace(svc, depends_on=tuple(dict.fromkeys(resolved)))


def _start_order(services: list[ServiceConfig], where: _Where) -> tuple[ServiceConfig, ...]:
    """Dependencies first; among services free to start, the file's order.

    Always taking the first ready service in file order keeps the result as close to
    what the user wrote as the dependencies allow.
    """
    pending = list(services)
    started: set[str] = set()
    ordered = []
    while pending:
        ready = next((svc for svc in pending if started.issuperset(svc.depends_on)), None)
        if ready is None:
            raise _cycle_error(pending, where)
        pending.remove(ready)
        started.add(ready.name)
        ordered.append(ready)
    return tuple(ordered)


def _cycle_error(pending: list[ServiceConfig], where: _Where) -> ConfigError:
    # Every pending service waits on another pending one (else it would be ready), so
    # following those waits from anywhere must come back to a service already seen.
    names = {svc.name for svc in pending}
    waits_on = {svc.name: next(d for d in svc.depends_on if d in names) for svc in pending}
    trail = [pending[0].name]
    while trail[-1] not in trail[:-1]:
        trail.append(waits_on[trail[-1]])
    cycle = trail[trail.index(trail[-1]) :]
    return where.key(cycle[0]).key("depends_on").error("dependency cycle " + " -> ".join(cycle))


# --- values ------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A value for an error message, spelled as in TOML where it matters, and short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _from_text(value: Any, where: _Where, convert: Callable[[str], Any]) -> Any:
    """Environment values are strings: convert them if possible, else leave them to fail."""
    if where.text and isinstance(value, str):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def _is_finite_number(value: Any) -> bool:
    # bool is an int subclass, but `true` is never meant as a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)  # TOML allows inf and nan, which make no sense here
    except OverflowError:  # an int too big for a float
        return False


def _table(value: Any, where: _Where) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(f"expected a table, got {_show(value)}")
    return value


def _number(raw: Any, where: _Where, *, minimum: int, exclusive: bool = False) -> float:
    value = _from_text(raw, where, float)
    if not _is_finite_number(value) or value < minimum or (exclusive and value == minimum):
        bound = f"{'>' if exclusive else '≥'} {minimum}"
        raise where.error(f"expected a number {bound}, got {_show(raw)}")
    return float(value)


def _integer(raw: Any, where: _Where, *, minimum: int, maximum: int | None = None) -> int:
    value = _from_text(raw, where, int)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.error(f"expected an integer ≥ {minimum}, got {_show(raw)}")
    if maximum is not None and value > maximum:
        raise where.error(f"expected an integer ≤ {maximum}, got {_show(raw)}")
    return value


def _workers(raw: Any, where: _Where) -> int:
    """`[gateway] workers`: a number, or "auto" for one per CPU (see auto_workers)."""
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return auto_workers()
    return _integer(raw, where, minimum=1, maximum=64)


def _boolean(value: Any, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"expected true or false, got {_show(value)}")
    return value


def _string(value: Any, where: _Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"expected a non-empty string, got {_show(value)}")
    return value


def _choice(
    value: Any, where: _Where, *, choices: tuple[str, ...], normalize: Callable[[str], str]
) -> str:
    if isinstance(value, str) and normalize(value) in choices:
        return normalize(value)
    expected = ", ".join(repr(choice) for choice in choices)
    hint = _did_you_mean(value, choices) if isinstance(value, str) else ""
    raise where.error(f"expected one of {expected}, got {_show(value)}{hint}")


def _module(value: Any, where: _Where) -> str:
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 2 or not all(_is_dotted_name(part) for part in parts):
        raise where.error(f"expected 'package.module:ClassName', got {_show(value)}")
    return value


def _is_dotted_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _command(value: Any, where: _Where) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            import shlex

            argv = shlex.split(value)
        except ValueError as exc:  # e.g. an unclosed quote
            raise where.error(f"cannot split {value!r} ({exc})") from None
    elif isinstance(value, list) and all(isinstance(arg, str) for arg in value):
        argv = value
    else:
        raise where.error(f"expected a list of strings or a string, got {_show(value)}")
    if not argv or not argv[0]:
        raise where.error(f"expected a non-empty command, got {_show(value)}")
    return tuple(argv)


def _environment(value: Any, where: _Where) -> dict[str, str]:
    env = {}
    for name, item in _table(value, where).items():
        if not name or "=" in name or "\0" in name:
            raise where.error(f"invalid environment variable name {name!r}")
        if isinstance(item, bool):
            env[name] = "true" if item else "false"  # as written in TOML, not "True"
        elif isinstance(item, str | int | float):
            env[name] = str(item)
        else:
            raise where.key(name).error(f"expected a string or a number, got {_show(item)}")
    return env


def _names(value: Any, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise where.error(f"expected a list of service names, got {_show(value)}")
    return tuple(value)


def _directory(value: Any, where: _Where, *, base: Path) -> Path:
    path = (base / Path(_string(value, where)).expanduser()).resolve()
    if not path.is_dir():
        raise where.error(f"no such directory: {str(path)!r}")
    return path


MAX_LISTEN = 16  # sockets one service may be handed (fds 3 to 18)


def _listen(value: Any, where: _Where, *, base: Path) -> tuple[str, ...]:
    """`listen = ["tcp://HOST:PORT", "unix://PATH"]`: each address normalized, a Unix
    path made absolute (relative to the config's directory, as every path in it)."""
    if not isinstance(value, list) or not value or len(value) > MAX_LISTEN:
        raise where.error(f"expected a list of 1 to {MAX_LISTEN} addresses, got {_show(value)}")
    addresses: list[str] = []
    for item in value:
        address = _listen_address(item, where, base)
        if address in addresses:
            raise where.error(f"{item!r} is listed twice")
        addresses.append(address)
    return tuple(addresses)


def _listen_address(item: Any, where: _Where, base: Path) -> str:
    text = _string(item, where)
    scheme, sep, rest = text.partition("://")
    if sep and scheme == "unix" and rest:
        path = (base / Path(rest).expanduser()).resolve()
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise where.error(f"{str(path)!r} is too long for a socket (at most 107 bytes)")
        return f"unix://{path}"
    if sep and scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if colon and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
            return f"tcp://{host}:{int(port)}" if ":" not in host else f"tcp://[{host}]:{int(port)}"
    raise where.error(f'expected "tcp://HOST:PORT" or "unix://PATH", got {_show(item)}')


def parse_signal(value: str | int) -> signal.Signals:
    """A signal from its name ("TERM", "SIGTERM", "hup") or number (15, "15");
    ValueError if there is no such signal."""
    try:
        if isinstance(value, str):
            name = value.strip().upper()
            if name.isdigit():
                return signal.Signals(int(name))
            return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        if isinstance(value, int) and not isinstance(value, bool):
            return signal.Signals(value)
    except (KeyError, ValueError):
        pass
    raise ValueError(f"expected a signal name like 'TERM' or a number, got {_show(value)}")


def _signal(value: Any, where: _Where) -> signal.Signals:
    try:
        return parse_signal(value)
    except ValueError as exc:
        raise where.error(str(exc)) from None


def _size(value: Any, where: _Where) -> int:
    try:
        size = parse_size(value)
    except ValueError:
        size = 0
    if size <= 0:
        raise where.error(
            f"expected a size like '300M' (K, M, G: 1024s of bytes), got {_show(value)}"
        )
    return size


def _account(value: Any, where: _Where, *, database: str) -> str:
    """A user or group (`database`: "user" or "group") by name or number; it must exist."""
    import grp
    import pwd

    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    text = _string(value, where).strip()
    find = (pwd.getpwuid, pwd.getpwnam) if database == "user" else (grp.getgrgid, grp.getgrnam)
    try:
        find[0](int(text)) if text.isdigit() else find[1](text)
    except (KeyError, OverflowError):
        raise where.error(f"no such {database}: {text!r}") from None
    return text


def _umask(value: Any, where: _Where) -> int:
    # A string only: TOML has no 022, and `umask = 22` would silently mean 0o026.
    text = value.strip().lower().removeprefix("0o") if isinstance(value, str) else ""
    if not text or len(text) > 4 or any(ch not in "01234567" for ch in text):
        raise where.error(f'expected octal digits in a string, like "022", got {_show(value)}')
    return int(text, 8) & 0o777


# setrlimit(2)'s resources, named as prlimit(1) names them; True: a size in bytes.
RLIMITS = {
    "as": True,
    "core": True,
    "cpu": False,
    "data": True,
    "fsize": True,
    "locks": False,
    "memlock": True,
    "msgqueue": True,
    "nice": False,
    "nofile": False,
    "nproc": False,
    "rss": True,
    "rtprio": False,
    "rttime": False,
    "sigpending": False,
    "stack": True,
}
UNLIMITED = -1  # resource.RLIM_INFINITY


def _rlimits(value: Any, where: _Where) -> dict[str, tuple[int, int | None]]:
    limits = {}
    for name, item in _table(value, where).items():
        if name not in RLIMITS:
            raise where.error(f"unknown limit {name!r}{_did_you_mean(name, RLIMITS)}")
        at = where.key(name)
        pair = item if isinstance(item, list) else [item]
        if len(pair) not in (1, 2):
            raise at.error(f"expected a value or [soft, hard], got {_show(item)}")
        soft, *hard = (_limit(v, at, size=RLIMITS[name]) for v in pair)
        ceiling = hard[0] if hard else current_hard_limit(name)
        if ceiling is not None and above_limit(soft, ceiling):
            which = "the hard limit" if hard else "the current hard limit"
            raise at.error(f"soft limit {_show(pair[0])} is above {which} ({ceiling})")
        limits[name] = (soft, hard[0] if hard else None)
    return limits


def _limit(value: Any, where: _Where, *, size: bool) -> int:
    if isinstance(value, str) and value.strip().lower() in ("unlimited", "infinity"):
        return UNLIMITED
    try:
        if isinstance(value, str) and size:
            return parse_size(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    except ValueError:
        pass
    sized = ", a size like '2G'" if size else ""
    raise where.error(f"expected an integer ≥ 0{sized} or 'unlimited', got {_show(value)}")


def above_limit(value: int, limit: int) -> bool:
    return limit != UNLIMITED and (value == UNLIMITED or value > limit)


def current_hard_limit(name: str) -> int | None:
    """The hard limit procorch (and so the daemon it starts) has now, if Python knows it."""
    import resource

    number = getattr(resource, f"RLIMIT_{name.upper()}", None)
    if number is None:
        return None
    hard = resource.getrlimit(number)[1]
    return UNLIMITED if hard == resource.RLIM_INFINITY else hard


def _env_file(value: Any, where: _Where, *, base: Path) -> tuple[Path, dict[str, str]]:
    """The file (relative to the config's directory) and the variables it sets now."""
    path = base / Path(_string(value, where)).expanduser()
    if not path.is_file():
        what = "not a file" if path.exists() else "no such file"
        raise where.error(f"{what}: {str(path)!r}")
    return path, read_env_file(path)


def read_env_file(path: Path) -> dict[str, str]:
    """The variables an `env_file` sets; ConfigError if it cannot be read."""
    # a line with a name but no '=' sets nothing (python-dotenv gives it None)
    return {k: v for k, v in _read_dotenv(path).items() if v is not None}


def escape_braces(values: Mapping[str, str]) -> dict[str, str]:
    """`env_file` values as `env` keeps them: taken as written, braces no placeholders."""
    return {k: v.replace("{", "{{").replace("}", "}}") for k, v in values.items()}


def _url(value: Any, where: _Where) -> str:
    text = _string(value, where)
    try:
        from urllib.parse import urlsplit

        parts = urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        valid = False
    if not valid:
        # a URL may carry a password (https://user:PASSWORD@host): never echo it
        raise where.error(f"expected an http:// or https:// URL, got {redact(text)!r}")
    return text


def _backend(value: Any, where: _Where) -> str:
    """ "sqlite", or a redis:// URL with a host, an optional port and an optional db number."""
    text = _string(value, where).strip()
    if text.lower() == "sqlite":
        return "sqlite"
    try:
        from urllib.parse import urlsplit

        parts = urlsplit(text)
        db = parts.path.strip("/")
        valid = (
            parts.scheme in ("redis", "rediss")
            and bool(parts.hostname)
            and (parts.port is None or 0 < parts.port < 65536)
            and (db == "" or db.isdigit())
        )
    except ValueError:  # a port that is not a number, an unclosed IPv6 bracket
        valid = False
    if not valid:
        # the URL may carry a password (redis://:PASSWORD@host): never echo it
        shown = redact(text)
        raise where.error(f'expected "sqlite" or a URL like redis://HOST:PORT/DB, got {shown!r}')
    return text


def _functions(value: Any, where: _Where) -> dict[str, dict[str, Any]]:
    """`name = "module:function"`, or a table with `target` and policy keys."""
    functions = {}
    for name, spec in _table(value, where).items():
        if not name.isidentifier():
            raise where.error(f"invalid function name {name!r} (use a Python identifier)")
        if name == "fib":
            raise where.key(name).error("'fib' is the built-in job; choose another name")
        fields = _fields(spec, where.key(name), _FUNCTION_PARSERS) if isinstance(spec, dict) else {}
        target = fields.get("target", spec)
        parts = target.split(":") if isinstance(target, str) else []
        if len(parts) != 2 or not all(_is_dotted_name(part) for part in parts):
            at = where.key(name).key("target") if isinstance(spec, dict) else where.key(name)
            raise at.error(f"expected 'package.module:function', got {_show(target)}")
        functions[name] = {**fields, "target": target}
    return functions


def _schedules(value: Any, where: _Where) -> dict[str, dict[str, Any]]:
    """`[jobs.schedules]`: NAME = { function, cron | every, args, kwargs, timezone }."""
    from procorch import schedulespec  # croniter is imported only for a cron entry

    schedules = {}
    for name, body in _table(value, where).items():
        if not schedulespec.NAME.fullmatch(name):
            raise where.error(
                f"invalid schedule name {name!r} (1 to 64 letters, digits, '_', '-' and '.')"
            )
        parsers = {
            "function": _string,
            "cron": partial(_checked, check=schedulespec.check_cron),
            "every": _every,
            "timezone": partial(_checked, check=schedulespec.check_timezone),
            "args": partial(_json, kind=list),
            "kwargs": partial(_json, kind=dict),
        }
        fields = _fields(body, where.key(name), parsers)
        _exactly_one(fields, where.key(name), "cron", "every")
        if "function" not in fields:
            raise where.key(name).error("missing `function`")
        if "timezone" in fields and "every" in fields:
            raise where.key(name).key("timezone").error("only used with `cron`")
        schedules[name] = fields
    return schedules


def _every(value: Any, where: _Where) -> int:
    """A schedule's interval: whole seconds, at least one ("30s", "5m", "1h", "1d", 90)."""
    seconds = _duration(value, where)
    if seconds < 1 or seconds != int(seconds):
        raise where.error(f"expected a whole number of seconds, at least 1, got {_show(value)}")
    return int(seconds)


def _checked(value: Any, where: _Where, *, check: Callable[[Any], Any]) -> Any:
    """`check(value)`'s result, its ValueError as this key's error."""
    try:
        return check(value)
    except ValueError as exc:
        raise where.error(str(exc)) from None


def _json(value: Any, where: _Where, *, kind: type) -> Any:
    """A list or table that JSON can carry (TOML dates cannot be a job's arguments)."""
    if not isinstance(value, kind):
        expected = "a list" if kind is list else "a table"
        raise where.error(f"expected {expected}, got {_show(value)}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise where.error(f"not JSON: {exc}") from None
    return value


def _check_scheduled_functions(jobs: JobsSettings, where: _Where) -> None:
    """A schedule names a job function the queue knows; checked once all of [jobs] is read."""
    for name, table in jobs.schedules.items():
        function = table["function"]
        # a function registered with @procorch.job in `modules` is known only to the workers
        if function != "fib" and function not in jobs.functions and not jobs.modules:
            known = ", ".join(["fib", *jobs.functions])
            raise (
                where.key(name)
                .key("function")
                .error(f"unknown job function {function!r} (known: {known})")
            )


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like "90", "30s", "10m", "1.5h", "7d"; else None."""
    if _is_finite_number(value) and value >= 0:
        return float(value)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    return float(match[1]) * DURATION_UNITS[match[2] or "s"]


def _duration(value: Any, where: _Where) -> float:
    seconds = parse_duration(value)
    if seconds is None:
        example = '"30s", "10m" or "7d"'
        raise where.error(f"expected seconds or a duration like {example}, got {_show(value)}")
    return seconds


def _ttl(value: Any, where: _Where) -> float:
    """A duration, or -1 for forever."""
    return -1.0 if value == -1 else _duration(value, where)


def _module_names(value: Any, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(m, str) and m and _is_dotted_name(m) for m in value
    ):
        raise where.error(f"expected a list of module names like 'app.tasks', got {_show(value)}")
    return tuple(value)


def _queue(value: Any, where: _Where) -> str:
    text = _string(value, where)
    if not QUEUE_NAME.fullmatch(text):
        raise where.error(f"invalid queue name {text!r} (use letters, digits, '_', '-' and '.')")
    return text


def _queues(value: Any, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise where.error(f"expected a non-empty list of queue names, got {_show(value)}")
    return tuple(dict.fromkeys(_queue(q, where) for q in value))


AUTO_TOKEN = "auto"  # [gateway] token = "auto": the gateway makes one (gateway/token.py)


def _token(value: Any, where: _Where) -> str:
    text = _string(value, where)
    if text == AUTO_TOKEN:
        return text
    # It travels in an HTTP header: printable ASCII without spaces, and long enough to guess hard.
    if not all("!" <= ch <= "~" for ch in text):
        raise where.error("expected printable ASCII without spaces (it is sent in a header)")
    if len(text) < 16:
        raise where.error(f"too short ({len(text)} characters): use at least 16")
    return text


def _fraction(raw: Any, where: _Where) -> float:
    value = _number(raw, where, minimum=0)
    if value > 1:
        raise where.error(f"expected a number from 0.0 to 1.0, got {_show(raw)}")
    return value


_positive = partial(_number, minimum=0, exclusive=True)
_port = partial(_integer, minimum=1, maximum=65535)

_SETTINGS_PARSERS: dict[str, _Parser] = {
    "run_dir": _string,
    "check_interval": _positive,
    "heartbeat_timeout": _positive,
    "max_restarts": partial(_integer, minimum=0),
    "restart_window": _positive,
    "backoff_max": partial(_number, minimum=0),
    "fatal_retry": partial(_number, minimum=0),
    "log_max_bytes": partial(_integer, minimum=1024),
    "log_backups": partial(_integer, minimum=0),
    "log_level": partial(_choice, choices=_LOG_LEVELS, normalize=str.upper),
    "synchronous": partial(_choice, choices=SYNCHRONOUS, normalize=str.lower),
    "log_timestamps": _boolean,
    "log_rotate": partial(_choice, choices=LOG_ROTATIONS, normalize=str.lower),
}
_GATEWAY_PARSERS: dict[str, _Parser] = {
    "enabled": _boolean,
    "host": _string,
    "port": _port,
    "token": _token,
    "max_body": partial(_integer, minimum=1024, maximum=1024**3),
    "threads": partial(_integer, minimum=1, maximum=256),
    "workers": _workers,
    "pin_cpu": _boolean,
    "timeout": _positive,
    "service_threads": partial(_integer, minimum=0, maximum=256),
    "request_deadline": _positive,
    "connection_limit": partial(_integer, minimum=1, maximum=1_000_000),
}
_SECTION_PARSERS = {"procorch": _SETTINGS_PARSERS, "gateway": _GATEWAY_PARSERS}
_JOBS_PARSERS: dict[str, _Parser] = {
    "backend": _backend,
    "workers": partial(_integer, minimum=1, maximum=1000),
    "delay": partial(_number, minimum=0),
    "failure_rate": _fraction,
    "max_n": partial(_integer, minimum=0, maximum=MAX_INT64),
    "mod": partial(_integer, minimum=2, maximum=MAX_INT64),
    "synchronous": partial(_choice, choices=SYNCHRONOUS, normalize=str.lower),
    "functions": _functions,
    "modules": _module_names,
    "schedules": _schedules,
}
# A job function's policy: the [jobs] keys of the same names (added to _JOBS_PARSERS
# below) are the defaults.
_FUNCTION_PARSERS: dict[str, _Parser] = {
    "target": _string,
    "max_attempts": partial(_integer, minimum=1, maximum=1000),
    "backoff": partial(_choice, choices=("exponential", "fixed"), normalize=str.lower),
    "retry_delay": _duration,
    "backoff_max": _duration,
    "jitter": _fraction,
    "timeout": _positive,
    "priority": partial(_integer, minimum=-MAX_PRIORITY, maximum=MAX_PRIORITY),
    "result_ttl": _ttl,
    "queue": _queue,
}
FUNCTION_POLICY = tuple(key for key in _FUNCTION_PARSERS if key != "target")
_JOBS_PARSERS.update({key: _FUNCTION_PARSERS[key] for key in FUNCTION_POLICY})
_HEALTH_PARSERS: dict[str, _Parser] = {
    "tcp": _port,
    "http": _url,
    "host": _string,
    "timeout": _positive,
}
# "cwd", "listen" and "env_file" are added by `_services`: they need the config
# file's directory.
_SERVICE_PARSERS: dict[str, _Parser] = {
    "module": _module,
    "command": _command,
    "replicas": partial(_integer, minimum=1, maximum=1000),
    "env": _environment,
    "depends_on": _names,
    "restart": partial(_choice, choices=RESTART_POLICIES, normalize=str.lower),
    "stop_signal": _signal,
    "stop_timeout": _positive,
    "start_seconds": partial(_number, minimum=0),
    "heartbeat_timeout": _positive,
    "fatal_retry": partial(_number, minimum=0),
    "health": _health,
    "queues": _queues,
    "base_port": _port,
    "max_rss": _size,
    "user": partial(_account, database="user"),
    "group": partial(_account, database="group"),
    "umask": _umask,
    "rlimits": _rlimits,
    "stderr": partial(_choice, choices=STDERR_MODES, normalize=str.lower),
    "log_timestamps": _boolean,
}
_HOOK_PARSERS: dict[str, _Parser] = {
    "on": _hook_events,
    "command": _command,
    "url": _url,
    "timeout": _positive,
    "max_runs": partial(_integer, minimum=1, maximum=1000),
    "window": _positive,
}


def replicas_problem(svc: ServiceConfig, replicas: Any, run_dir: Path) -> str | None:
    """Why `svc` cannot run `replicas` replicas (a live `scale`), in one line; or None.
    The loader's own checks of a count: its range, the last replica's `{port}` and the
    last Python replica's socket path."""
    where = _Where("", f"services.{svc.name}")
    try:
        count = _SERVICE_PARSERS["replicas"](replicas, where.key("replicas"))
        _check_templates({"base_port": svc.base_port, "replicas": count}, where)
        _check_sockets_fit(run_dir, [replace(svc, replicas=count)], where)
    except ConfigError as exc:
        return str(exc)
    return None
