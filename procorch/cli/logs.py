"""Reading what happened: `logs` (services' captured output) and `events`.

Which services there are is the running stack's business, not the config file's:
`up --gateway` adds a Gateway no file names, and the file may have changed since
`up`. So `logs` asks the daemon; when it is down, the run directory's last snapshot
(state.json) says what ran, and only a stack that never ran falls back on the config.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, BinaryIO, NoReturn

import typer

from procorch.cli import complete
from procorch.cli.common import (
    EXIT_CONFIG,
    ConfigOpt,
    RunDirOpt,
    ask,
    existing_run_dir,
    fail,
    load,
    recorded_replicas,
    request,
)
from procorch.config import Config
from procorch.supervisor.rundir import RunDir

FOLLOW_INTERVAL = 0.2  # seconds between looks at the files while following


# The options are named here, once, rather than written out in the signatures: Typer
# evaluates each parameter's annotation twice while building the commands, on every
# run of any command, and a name costs less to evaluate than an Option(...) call.
NameArg = Annotated[
    str | None,
    typer.Argument(
        help="Only this service, or one replica of it (api.1).",
        show_default=False,
        autocompletion=complete.SERVICES_AND_REPLICAS,
    ),
]
LinesOpt = Annotated[
    int | None,
    typer.Option(
        "--lines",
        "-n",
        min=0,
        help="How many lines per replica [default: 20, or all with --since].",
        show_default=False,
    ),
]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output.")]
TimestampsOpt = Annotated[
    bool, typer.Option("--timestamps", "-t", help="Show when each line was written (UTC).")
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only lines written since then: a time ago (30s, 10m, 1h, 2d) or a date "
        "and time (2026-12-02T08:00:00, local unless it ends in Z or +HH:MM).",
    ),
]
ReopenOpt = Annotated[
    bool,
    typer.Option(
        "--reopen",
        help="Have the daemon open every log file again (for logrotate's postrotate); "
        "shows nothing.",
    ),
]
StdoutOpt = Annotated[
    bool, typer.Option("--stdout", help="Only the output files (no separate stderr files).")
]
StderrOpt = Annotated[
    bool, typer.Option("--stderr", help='Only the stderr files of stderr = "separate" services.')
]
EventLinesOpt = Annotated[int, typer.Option("--lines", "-n", min=0, help="How many events.")]
EventFollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")]
EventJsonOpt = Annotated[
    bool, typer.Option("--json", help="Machine-readable JSON (with -f: one object per line).")
]


def logs(
    name: NameArg = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    lines: LinesOpt = None,
    follow: FollowOpt = False,
    timestamps: TimestampsOpt = False,
    since: SinceOpt = None,
    reopen: ReopenOpt = False,
    stdout: StdoutOpt = False,
    stderr: StderrOpt = False,
) -> None:
    """Show the captured output (stdout and stderr) of services."""
    from procorch.supervisor.logs import read_lines

    cfg = load(config, run_dir)
    if reopen:
        answer = request(cfg, {"cmd": "reopen"})
        typer.echo(f"procorch: reopened {answer['reopened']} log files", err=True)
        return
    rundir = existing_run_dir(cfg)
    after = since_stamp(since) if since is not None else None
    chosen = select(stack_replicas(cfg, rundir), name)
    count = lines if lines is not None else (None if after else 20)
    files = log_files(rundir, chosen, out=stdout or not stderr, err=stderr or not stdout)
    stamped = {label: timestamps or shows_times(cfg, label) for label, _ in files}
    width = max(len(label) for label, _ in files) if len(files) > 1 else 0
    # Following starts where reading back ends (and the followers are placed first), so
    # no line is lost or shown twice; without -f, a line still being written shows too.
    tails = [_Tail(label, path) for label, path in files] if follow else []
    ends = [tail.start for tail in tails] or [None] * len(files)
    # One replica's lines are in order; several are merged by time, as they happened.
    earlier = [
        [(stamp or "", label, text) for stamp, text in read_lines(path, count, after, upto=end)]
        for (label, path), end in zip(files, ends, strict=True)
    ]
    for stamp, label, text in heapq.merge(*earlier, key=lambda line: line[0]):
        typer.echo(_line(label, width, stamp or None, text, stamped[label]))
    if follow:
        from procorch.supervisor.logs import split_stamp

        def show(tail: _Tail, raw: str) -> None:
            stamp, text = split_stamp(raw.removesuffix("\r"))
            typer.echo(_line(tail.label, width, stamp, text, stamped[tail.label]))

        _follow(tails, show)


ERR_LABEL = "/err"  # `api.0/err`: the lines of api.0's separate stderr file


def log_files(
    rundir: RunDir, replicas: list[tuple[str, int]], out: bool = True, err: bool = True
) -> list[tuple[str, Path]]:
    """(label, file) of each replica's output, and of its stderr where that is a file
    of its own (`stderr = "separate"`, now or when it ran)."""
    files = []
    for svc, i in replicas:
        if out:
            files.append((f"{svc}.{i}", rundir.log_path(svc, i)))
        if err and rundir.err_log_path(svc, i).exists():
            files.append((f"{svc}.{i}{ERR_LABEL}", rundir.err_log_path(svc, i)))
    return files


def shows_times(cfg: Config, label: str) -> bool:
    """Whether a file's lines are shown with their times without -t (`log_timestamps`)."""
    if cfg.settings.log_timestamps:
        return True
    name = label.removesuffix(ERR_LABEL).rpartition(".")[0]
    try:
        return cfg.service(name).log_timestamps
    except KeyError:  # run by the stack, not in the file (the gateway of `up --gateway`)
        return False


def stack_replicas(cfg: Config, rundir: RunDir) -> list[tuple[str, int]]:
    """Every (service, replica) of the stack in this run directory, in start order."""
    status = ask(rundir.path, {"cmd": "status", "names": []})
    if status is None:  # down (or unwell): what it last said it ran is on disk
        return recorded_replicas(cfg)
    return [(s["name"], s["replica"]) for s in status["services"]]


def select(replicas: list[tuple[str, int]], name: str | None) -> list[tuple[str, int]]:
    """The replicas `name` means: all, one service's (any case), or one replica (`api.1`)."""
    if name is None:
        return replicas
    chosen = [r for r in replicas if r[0].lower() == name.lower()]
    service, dot, number = name.rpartition(".")
    if not chosen and dot and number.isdigit():  # a service called `api.1` wins over this
        chosen = [r for r in replicas if r[0].lower() == service.lower() and r[1] == int(number)]
        if not chosen and any(r[0].lower() == service.lower() for r in replicas):
            count = sum(r[0].lower() == service.lower() for r in replicas)
            fail(f"{service} has no replica {number} (it has {count}: 0 to {count - 1})")
    if not chosen:
        known = ", ".join(dict.fromkeys(r[0] for r in replicas))
        fail(f"no service named {name!r} (known: {known})")
    return chosen


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d*)?)s)?")


def since_stamp(value: str) -> str:
    """--since as the log files write times (UTC ISO 8601, to the millisecond).

    A time ago (`30s`, `10m`, `1h30m`, `2d`), or a date and time in ISO 8601; without
    a zone it is local time, as the user's clock shows it (docker does the same).
    """
    from datetime import UTC, datetime

    duration = _DURATION.fullmatch(value.strip())
    if duration and any(duration.groups()):
        days, hours, minutes, seconds = (float(g or 0) for g in duration.groups())
        when = time.time() - (((days * 24 + hours) * 60 + minutes) * 60 + seconds)
        moment = datetime.fromtimestamp(when, UTC)
    else:
        try:
            moment = datetime.fromisoformat(value.strip()).astimezone(UTC)
        except ValueError:
            fail(
                f"--since {value!r}: expected a time ago (30s, 10m, 1h, 2d) "
                "or a date and time (2026-12-02T08:00:00)",
                EXIT_CONFIG,
            )
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _line(label: str, width: int, stamp: str | None, text: str, timestamps: bool) -> str:
    if timestamps:
        text = f"{stamp or '-':<24} {text}"  # `-`: a line from before lines had times
    return f"{label:<{width}} | {text}" if width else text


class _Tail:
    """One log file followed like `tail -F`: it may roll over, or not exist yet.

    The file is held open, so when it is renamed away (to .1) its last lines are still
    read from it; the files rotated after it, if several rotations came between two
    looks, are read next, and then the new file from its start.
    """

    def __init__(self, label: str, path: Path) -> None:
        self.label = label
        self.path = path
        self.file: BinaryIO | None = None
        self.partial = b""  # the start of a line whose end has not been written yet
        self.start = 0  # where following starts: after the last whole line there is now
        try:
            self.file = open(path, "rb")  # noqa: SIM115 - held open across calls
        except OSError:
            return
        end = self.file.seek(0, os.SEEK_END)
        # A line still being written is the follower's to print, once it is whole.
        block = max(0, end - 65536)
        self.file.seek(block)
        last = self.file.read(end - block).rfind(b"\n")
        self.start = block + last + 1 if last >= 0 or block == 0 else end
        self.file.seek(self.start)

    def new_lines(self) -> list[str]:
        """The lines completed since the last call."""
        try:
            current: int | None = os.stat(self.path).st_ino
        except OSError:
            current = None
        data = self.partial
        if self.file is not None:
            held = os.fstat(self.file.fileno())
            if current == held.st_ino and held.st_size < self.file.tell():
                self.file.seek(0)  # truncated in place (log_backups = 0)
            # Stat came first: anything the held file got before it was renamed is here.
            data += self.file.read()
            if current is not None and current != held.st_ino:
                for older in self._rotated_after(held.st_ino):
                    data += _read(older)
                self.file.close()
                self.file = None
        if self.file is None and current is not None:
            try:
                self.file = open(self.path, "rb")  # noqa: SIM115 - held open across calls
            except OSError:
                pass
            else:
                data += self.file.read()
        complete, newline, self.partial = data.rpartition(b"\n")
        return complete.decode(errors="replace").split("\n") if newline else []

    def _rotated_after(self, inode: int) -> list[Path]:
        """The rotated files newer than the one with `inode` (now .k): .k-1, ..., .1."""
        newer: list[Path] = []
        k = 1
        while True:
            path = self.path.with_name(f"{self.path.name}.{k}")
            try:
                if os.stat(path).st_ino == inode:
                    return newer
            except OSError:
                return newer  # it is gone already: what is left is all there is
            newer.insert(0, path)
            k += 1


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _follow(tails: list[_Tail], show: Callable[[_Tail, str], None]) -> NoReturn:
    """Show each new whole line of the files as it comes, until Ctrl-C."""
    try:
        while True:
            for tail in tails:
                for raw in tail.new_lines():
                    show(tail, raw)
            time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def events(
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    lines: EventLinesOpt = 30,
    follow: EventFollowOpt = False,
    as_json: EventJsonOpt = False,
) -> None:
    """Show the event log: starts, exits, restarts, health kills, FATAL."""
    from procorch.supervisor.logs import read_lines

    cfg = load(config, run_dir)
    rundir = existing_run_dir(cfg)
    # A follower starts where the file ends now; reading back stops there, so no event
    # is shown twice.
    tail = _Tail("events", rundir.events_file) if follow else None
    back = read_lines(rundir.events_file, lines, upto=tail.start if tail else None)
    entries = [entry for _, raw in back if (entry := _event(raw)) is not None]
    if as_json and tail is None:
        typer.echo(json.dumps(entries, indent=2))  # one document; a follower, a line each
        return

    def show(_: _Tail | None, raw: str) -> None:
        entry = _event(raw)
        if entry is not None:
            typer.echo(json.dumps(entry) if as_json else _event_line(entry))

    for _, raw in back:
        show(tail, raw)
    if tail is not None:
        _follow([tail], show)


def _event(raw: str) -> dict[str, Any] | None:
    """An event log line's event; None for a line cut short by a crash."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _event_line(e: dict[str, Any]) -> str:
    who = f"{e['service']}.{e['replica']}" if "service" in e else "procorch"
    pid = f" pid {e['pid']}" if "pid" in e else ""
    detail = f": {e['detail']}" if e.get("detail") else ""
    return f"{e['time']}  {who:<20} {e['event']}{pid}{detail}"


def register(app: typer.Typer) -> None:
    app.command()(logs)
    app.command()(events)
