"""The benchmarks' own virtual environment, bench/.venv (gitignored).

It holds each benchmark's peers (supervisor and circus; rq and redis), psutil, and procorch
itself, installed from the repository root as a user installs it: not editable, so its
bytecode is compiled at install time like the peers' (an editable install under
PYTHONDONTWRITEBYTECODE would recompile procorch on every start and measure that instead).
`ensure_venv` creates the venv with `python -m venv`, installs the dependencies whenever a
benchmark asks for a package the venv does not have yet or pyproject.toml changes, and
reinstalls procorch's own code on every run. The stamp file records what was installed, so
two benchmarks with different package lists share the venv without reinstalling each
other's peers on every run. This module uses the standard library only: it runs before the
venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent  # bench/
REPO_ROOT = BENCH_DIR.parent
VENV_DIR = BENCH_DIR / ".venv"
BIN_DIR = VENV_DIR / "bin"
VENV_PYTHON = BIN_DIR / "python"
PEER_PACKAGES = ("supervisor", "circus", "psutil")  # the supervisors area's
_STAMP = VENV_DIR / ".bench-installed"


def _project_digest() -> str:
    return hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes()).hexdigest()


def _installed() -> set[str]:
    """The packages the stamp says are installed for the current pyproject.toml."""
    try:
        digest, *packages = _STAMP.read_text().split()
    except (OSError, ValueError):
        return set()
    return set(packages) if digest == _project_digest() else set()


def _pip(*args: str) -> bool:
    cmd = [str(VENV_PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    print(f"[bench] {' '.join(cmd)}", file=sys.stderr)
    return subprocess.run(cmd, check=False).returncode == 0


def ensure_venv(packages: tuple[str, ...] = PEER_PACKAGES) -> None:
    """Create bench/.venv and install `packages` and procorch into it, if not done yet.

    A failed install of procorch itself (say, the project is mid-edit) is not fatal: the
    benchmark then skips procorch with a note. A failed install of the peers is fatal.
    """
    if not VENV_PYTHON.exists():
        print(f"[bench] creating {VENV_DIR}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    installed = _installed()
    if not set(packages) <= installed:
        wanted = sorted(installed | set(packages))
        if not _pip(*wanted):
            raise SystemExit("[bench] could not install the peers into bench/.venv")
        if not _pip(str(REPO_ROOT)):
            print("[bench] warning: installing procorch failed", file=sys.stderr)
            return  # no stamp: try again next run
        _STAMP.write_text(" ".join([_project_digest(), *wanted]))
    elif not _pip("--no-deps", "--force-reinstall", str(REPO_ROOT)):
        print("[bench] warning: reinstalling procorch failed", file=sys.stderr)


def running_in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV_DIR.resolve()


def reexec_in_venv(script: Path, argv: list[str]) -> None:
    """Replace this process with the same script run by the bench venv's python."""
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), str(script), *argv])


READY = _READY = "PROCORCH_BENCH_VENV_READY"  # set before the re-exec: the venv is up to date


def main(
    script: str,
    argv: list[str],
    parse_args: Callable[[list[str]], argparse.Namespace],
    run: Callable[[argparse.Namespace], int],
    packages: tuple[str, ...] = PEER_PACKAGES,
) -> int:
    """A benchmark script's whole life: parse its arguments (also outside the venv, so
    `--help` works anywhere), bring the venv up to date once, re-run inside it, then
    `run`; Ctrl-C or SIGTERM end it with status 130 after `run` has cleaned up."""
    args = parse_args(argv)
    if not (running_in_venv() and os.environ.get(_READY)):
        ensure_venv(packages)
    if not running_in_venv():
        os.environ[_READY] = "1"  # procorch is reinstalled once, not again after the re-exec
        reexec_in_venv(Path(script).resolve(), argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("[bench] interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
