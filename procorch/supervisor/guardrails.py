"""Guardrails around a replica: who it runs as, its resource limits, its memory ceiling.

`user`/`group` and `rlimits` are applied by exec wrappers from util-linux, never by a
preexec_fn or Popen's user=/group=, which would take Popen off its vfork path (~1.4 ms
more per spawn in the daemon): `prlimit --nofile=4096: -- setpriv --reuid ... --
PROGRAM`. prlimit comes first, while still root, so it may raise hard limits; setpriv
last, so a failed exec of the command still leaves a zombie named setpriv (see
`Replica.still_setpriv`). The limits hold from the program's first instruction, unlike
os.prlimit() on the pid after the spawn, which races with the program reading its
limits (and with children it forks before we get there).

`max_rss`: `rss_over` counts consecutive health checks that saw a replica's RSS over
the ceiling; at `RSS_CHECKS` in a row it is restarted (one sample over is a spike).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
from collections.abc import Iterable

from procorch.config import UNLIMITED, ServiceConfig, above_limit, current_hard_limit
from procorch.sizes import format_size

RSS_CHECKS = 2  # consecutive checks over max_rss before a restart
_PRLIMIT = shutil.which("prlimit")
# setpriv also gives every command PDEATHSIG (process.py): looked up once, here
SETPRIV = shutil.which("setpriv")


def limit_args(svc: ServiceConfig) -> list[str]:
    """The prlimit wrapper that sets `svc.rlimits`, or nothing without any."""
    if not svc.rlimits:
        return []
    assert _PRLIMIT is not None, "start_problem() says so before any spawn"
    args = [_PRLIMIT]
    for name, (soft, hard) in sorted(svc.rlimits.items()):
        # "SOFT:" leaves the hard limit as it is; "SOFT:HARD" sets both
        args.append(f"--{name}={_limit(soft)}:{'' if hard is None else _limit(hard)}")
    return [*args, "--"]


def _limit(value: int) -> str:
    return "unlimited" if value == UNLIMITED else str(value)


def identity_args(svc: ServiceConfig) -> list[str]:
    """setpriv options that switch to `svc.user` / `svc.group` (nothing if neither).

    With a user: its uid, the group (else the user's own group) and the user's
    supplementary groups, as login would give them. A group alone: that gid, and no
    supplementary groups (root's would otherwise stay).
    """
    if svc.user is None and svc.group is None:
        return []
    args = []
    if svc.user is not None:
        entry = _user(svc.user)
        args += ["--reuid", str(entry.pw_uid), "--init-groups"]
        gid = entry.pw_gid
    if svc.group is not None:
        gid = _group(svc.group).gr_gid
        if svc.user is None:
            args.append("--clear-groups")
    return [*args, "--regid", str(gid)]


def identity_env(svc: ServiceConfig) -> dict[str, str]:
    """HOME, USER and LOGNAME of `svc.user`, as login and systemd's User= set them
    (the service's own `env` still wins); nothing without a user."""
    if svc.user is None:
        return {}
    entry = _user(svc.user)
    return {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}


# Checked when the config was read; gone since, it fails the spawn like a missing program.
def _user(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise OSError(errno.ENOENT, f"no user {user!r} any more") from None


def _group(group: str) -> grp.struct_group:
    try:
        return grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
    except KeyError:
        raise OSError(errno.ENOENT, f"no group {group!r} any more") from None


def start_problem(services: Iterable[ServiceConfig]) -> str | None:
    """Why the daemon cannot run these services as configured, in one line; or None."""
    for svc in services:
        if (svc.user or svc.group) and os.geteuid() != 0:
            key = "user" if svc.user else "group"
            return (
                f"services.{svc.name}.{key}: procorch must run as root to start it as another {key}"
            )
        if (svc.user or svc.group) and SETPRIV is None:
            return f"services.{svc.name}: `user` and `group` need setpriv (util-linux), not found"
        if svc.rlimits and _PRLIMIT is None:
            return f"services.{svc.name}.rlimits: needs prlimit (util-linux), not found"
        raised = _raised_hard_limit(svc) if svc.rlimits else None
        if raised and not _may_raise_hard_limits():
            return (
                f"services.{svc.name}.rlimits.{raised}: raising a hard limit needs root "
                "with CAP_SYS_RESOURCE, which procorch does not have"
            )
    return None


CAP_SYS_RESOURCE = 24


def _may_raise_hard_limits() -> bool:
    """Whether this process has CAP_SYS_RESOURCE (root in a container may well not)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def _raised_hard_limit(svc: ServiceConfig) -> str | None:
    for name, (_, hard) in sorted(svc.rlimits.items()):
        current = current_hard_limit(name)
        if hard is not None and current is not None and above_limit(hard, current):
            return name
    return None


def rss_over(rss: int | None, limit: int | None, before: int) -> int:
    """How many checks in a row have now seen the RSS over `limit` (`before`: until now)."""
    if limit is None or rss is None or rss <= limit:
        return 0
    return before + 1


def rss_reason(rss: int, limit: int, checks: int) -> str:
    """The unhealthy event's reason, e.g. 'rss 412.0 MiB over max_rss 300.0 MiB at 2 checks'."""
    return f"rss {format_size(rss)} over max_rss {format_size(limit)} at {checks} checks"
