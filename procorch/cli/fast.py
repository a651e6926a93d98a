"""The hottest commands, `status` (`ps`) and `down`, answered without Typer or Rich.

Importing Typer and Rich takes several times longer than asking the daemon, and these
are the commands scripts and people run most. A run whose words are only these
commands with the options they share (`-c`/`--config`, `--run-dir`, `--json`, a service
name) is answered here; any other run (`--help`, `--watch`, a typo, completion) goes to
the Typer app (`procorch.cli.app`). So does any run where something is off (no daemon,
a config file that cannot be read or parsed, a refused request): the app then says what
is wrong, in the same words as always.

Here the config is read for one thing, where the run directory is: what runs is the
daemon's to say, from the config it validated when it started.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from procorch.cli.exits import EXIT_NOT_RUNNING, EXIT_OK
from procorch.locate import SOCKET_NAME, config_base, default_config, run_dir
from procorch.supervisor import control

COMMANDS = ("status", "ps", "down")
_VALUED = {"-c": "config", "--config": "config", "--run-dir": "run_dir"}
# `down` waits for the slowest service's stop_timeout and then this long for the daemon
# to exit, as the app's `down` does with the config's own figures.
DOWN_SLACK = 30.0


class Call:
    """A run this module answers: the command, its service name and its options."""

    __slots__ = ("command", "name", "as_json", "config", "run_dir")

    def __init__(self, command: str, environ: Mapping[str, str]) -> None:
        self.command = command
        self.name: str | None = None
        self.as_json = False
        self.config: str | None = environ.get("PROCORCH_CONFIG") or None
        self.run_dir: str | None = environ.get("PROCORCH_RUN_DIR") or None


def parse(argv: list[str], environ: Mapping[str, str]) -> Call | None:
    """The call `argv` (without the program) makes, or None when the app must answer it."""
    if any(name.startswith("_") and name.endswith("_COMPLETE") for name in environ):
        return None  # a shell asking for completions
    call: Call | None = None
    values: dict[str, str] = {}
    words = iter(argv)
    for word in words:
        key, _, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if key in _VALUED:
            value = value or next(words, "")
            if not value or value.startswith("-"):
                return None
            values[_VALUED[key]] = value
        elif call is None:
            if word not in COMMANDS:
                return None
            call = Call(word, environ)
        elif word == "--json" and call.command != "down":
            call.as_json = True
        elif not word.startswith("-") and call.command != "down" and call.name is None:
            call.name = word
        else:
            return None
    if call is not None:
        for key, value in values.items():
            setattr(call, key, value)
    return call


def socket_of(call: Call) -> Path | None:
    """The daemon's control socket for this call; None when the config cannot be read."""
    if call.run_dir is not None:
        return run_dir(Path(call.run_dir), None, Path.cwd()) / SOCKET_NAME
    config = Path(call.config) if call.config is not None else default_config()
    configured = None
    if config is not None:
        import tomllib

        try:
            data = tomllib.loads(config.read_bytes().decode("utf-8-sig"))
        except (OSError, ValueError):  # unreadable, not UTF-8, not TOML: the app explains
            return None
        section = data.get("procorch", {})
        if not isinstance(section, dict):
            return None  # not a table: the app says so
        configured = section.get("run_dir")
        if configured is not None and not isinstance(configured, str):
            return None
    return run_dir(None, configured, config_base(config)) / SOCKET_NAME


def status_code(status: dict[str, Any]) -> int:
    ok = all(s["state"] == "running" for s in status["services"])
    return EXIT_OK if ok else EXIT_NOT_RUNNING


def show(status: dict[str, Any], as_json: bool) -> None:
    """The status as JSON or as the table, and any warning the daemon has (a full disk)."""
    if as_json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return
    from procorch.render import print_status

    print_status(status)
    for warning in status["supervisor"].get("warnings", []):
        sys.stderr.write(f"procorch: warning: {warning}\n")


def status(call: Call, socket: Path) -> int | None:
    message = {"cmd": "status", "names": [call.name] if call.name else []}
    try:
        result = control.request(socket, message)
    except (control.DaemonNotRunning, control.ControlError, OSError):
        return None
    show(result, call.as_json)
    return status_code(result)


def down(socket: Path, started: float) -> int | None:
    """Ask the daemon to stop everything and return once its process has gone: the exit
    code, or None when no daemon answers on `socket`."""
    try:
        sock = control.connect(socket, {"cmd": "shutdown"}, timeout=control.ASK_TIMEOUT)
    except (control.DaemonNotRunning, OSError):
        return None
    with sock:
        try:
            reply = control.first_reply(sock)
        except OSError:  # TimeoutError included
            sys.stderr.write("procorch: the daemon did not answer in time\n")
            return 1
        budget = reply.get("stop_timeout", control.ASK_TIMEOUT) + DOWN_SLACK
        deadline = started + budget
        pid = reply.get("pid")
        gone = control.wait_closed(sock, deadline)
        if not (gone and control.wait_exited(pid, deadline - time.monotonic())):
            sys.stderr.write(f"procorch: the daemon did not stop within {budget:.0f}s\n")
            return 1
    sys.stdout.write(f"procorch stopped (pid {pid}) in {time.monotonic() - started:.2f}s\n")
    return EXIT_OK


def run(argv: list[str], environ: Mapping[str, str] | None = None) -> int | None:
    """Answer the run `argv` asks for and return its exit code; None: the app must."""
    started = time.monotonic()
    environ = os.environ if environ is None else environ
    call = parse(argv, environ)
    if call is None:
        return None
    socket = socket_of(call)
    if socket is None:
        return None
    if call.command == "down":
        return down(socket, started)
    return status(call, socket)
