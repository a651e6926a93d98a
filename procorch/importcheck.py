"""Before `up` starts anything: do the configured Python services and job functions import?

Config validation is pure, so it can only check that `module = "pkg.mod:Cls"` is
spelled right. A module that is not there, raises on import, or lacks the class would
otherwise pass, start the daemon, crash-loop to FATAL and leave the daemon running. So
`up` imports them first, as their processes will: in a subprocess (importing in the
CLI could run anything, and could not be undone), with the service's cwd, environment
and sys.path (`python -m` puts the cwd first, as for a replica). A module spec lookup
alone would miss a module that raises or lacks the class.

It costs one subprocess per distinct (cwd, env) of the checked services, usually one,
and none at all for a config that runs only procorch's built-in services.

    python -m procorch.importcheck < [["pkg.mod:Cls", "service"], ...]

answers one JSON line per target, in order: null when it resolves, else the problem.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from procorch.config import BUILTIN_MODULES, JOB_WORKER, Config

TIMEOUT = 10.0  # seconds: an import that takes longer is not judged (see check_imports)
SERVICE, FUNCTION, MODULE = "service", "function", "module"


@dataclass(frozen=True)
class Target:
    """One thing to resolve, and the config key that named it (for the error line)."""

    key: str  # e.g. "services.api.module" or "jobs.functions.square"
    spec: str  # "pkg.mod:Attr" ("pkg.mod" for a MODULE: it must import, that is all)
    kind: str  # SERVICE or FUNCTION


Where = tuple[Path | None, tuple[tuple[str, str], ...]]  # (cwd, the service's extra env)


def targets(cfg: Config, daemon_cwd: Path | None) -> dict[Where, list[Target]]:
    """What to check, grouped by where it will be imported. Pure: no import, no process.

    `daemon_cwd` is where the replicas of a service without `cwd` run (None: here).
    Job functions are imported by the JobWorker replicas, so with their cwd and env.
    """
    groups: dict[Where, list[Target]] = {}

    def add(where_cwd: Path | None, env: dict[str, str], target: Target) -> None:
        key = (where_cwd or daemon_cwd, tuple(sorted(env.items())))
        groups.setdefault(key, []).append(target)

    for svc in cfg.services:
        env = svc.environment(0)  # as replica 0 gets it: placeholders filled in
        if svc.module and svc.module not in BUILTIN_MODULES:
            add(svc.cwd, env, Target(f"services.{svc.name}.module", svc.module, SERVICE))
        if svc.module == JOB_WORKER:
            for name, entry in cfg.jobs.functions.items():
                target = Target(f"jobs.functions.{name}", entry["target"], FUNCTION)
                add(svc.cwd, env, target)
            for module in cfg.jobs.modules:  # their @procorch.job functions register there
                add(svc.cwd, env, Target("jobs.modules", module, MODULE))
    return groups


def check_imports(cfg: Config, source: str, daemon_cwd: Path | None) -> str | None:
    """The first problem as one line, 'procorch.toml: services.api.module: ...', or None.

    `source` names the config file as the user did. An import that outlasts TIMEOUT is
    let through with a warning on stderr (it may just be slow); its replicas will show
    what happens (a hang: "no heartbeat after N s").
    """
    import subprocess

    for (cwd, env), group in targets(cfg, daemon_cwd).items():
        request = json.dumps([[t.spec, t.kind] for t in group])
        try:
            child = subprocess.run(
                [sys.executable, "-m", "procorch.importcheck"],
                input=request,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # what the modules print is no answer
                text=True,
                cwd=cwd,
                env={**os.environ, **dict(env)},
                timeout=TIMEOUT,
            )
            output, code = child.stdout, child.returncode
        except subprocess.TimeoutExpired as exc:
            output, code = exc.stdout or "", None
        except OSError as exc:  # e.g. the cwd vanished since the config was read
            return f"{source}: {group[0].key}: cannot check it ({exc.strerror or exc})"
        if isinstance(output, bytes):  # TimeoutExpired keeps the raw bytes
            output = output.decode(errors="replace")
        answers = _answers(output)
        for target, problem in zip(group, answers, strict=False):
            if problem:
                return f"{source}: {target.key}: {problem}"
        if len(answers) < len(group):
            stuck = group[len(answers)]
            module = stuck.spec.partition(":")[0]
            if code is None:
                sys.stderr.write(
                    f"procorch: warning: importing {module!r} ({stuck.key}) took over "
                    f"{TIMEOUT:g}s; starting without checking it\n"
                )
                continue
            # it died importing this one: a crash in C code, os._exit, ...
            return f"{source}: {stuck.key}: importing {module!r} {_died(code)}"
    return None


def _answers(output: str) -> list[str | None]:
    """The child's answers, up to a line cut short (it was killed while writing)."""
    answers = []
    for line in output.splitlines():
        try:
            answers.append(json.loads(line))
        except ValueError:
            break
    return answers


def _died(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"killed the interpreter ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed the interpreter (signal {-code})"
    return f"ended the interpreter (exit status {code})"


# == the child: runs in the subprocess ==================================================


def problem(spec: str, kind: str) -> str | None:
    """Resolve `spec` as a replica (or a job worker) would; what is wrong, or None."""
    import importlib

    from procorch.services.base import exception_line

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            return f"cannot import {module_name!r}: {exc}"
        return f"importing {module_name!r} raised {exception_line(exc)}"
    except (Exception, SystemExit) as exc:
        return f"importing {module_name!r} raised {exception_line(exc)}"
    if kind == MODULE:
        return None
    if not hasattr(module, attr):
        import difflib

        close = difflib.get_close_matches(attr, [n for n in dir(module) if n[:1] != "_"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"module {module_name!r} has no {attr!r}{hint}"
    value = getattr(module, attr)
    if kind == SERVICE:
        from procorch.services.base import Service

        if not (isinstance(value, type) and issubclass(value, Service)):
            return f"{spec!r} is not a procorch Service subclass"
    elif not callable(value):
        return f"{spec!r} is not a function"
    return None


def main() -> None:
    # What the modules print must not mix with the answers: fd 1 goes to stderr for them.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for spec, kind in json.loads(sys.stdin.read()):
        answers.write(json.dumps(problem(spec, kind)) + "\n")
        answers.flush()  # each answer is out before the next import, which may crash
    # At once: a module's non-daemon thread or atexit handler must not hold `up` up.
    os._exit(0)


if __name__ == "__main__":
    main()
