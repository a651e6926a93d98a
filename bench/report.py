"""Turning `Results` into markdown: printed, and kept in its own section of RESULTS.md.

The section sits between BEGIN and END markers, so other benchmarks can keep their own
sections in the same file; rerunning replaces only this one.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from benchvenv import REPO_ROOT
from metrics import IDLE_N, SMALL_N, Plan, Results
from peers import Peer


def markers(name: str) -> tuple[str, str]:
    """The comments around benchmark `name`'s section of RESULTS.md."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


BEGIN, END = markers("supervisors")
OURS = "procorch"
RIVALS = ("supervisord", "circus")
FILE_HEADER = """# procorch benchmark results

Each section below is written by one script in `bench/`; rerunning a script replaces only its
own section. See `bench/README.md` for what is measured.
"""

Aggregate = Callable[[list[float]], float]


@dataclass(frozen=True)
class Row:
    label: str
    metric: str
    aggregate: Aggregate
    unit: str  # "ms" (samples in seconds), "MiB" or "s"
    compare: bool = True  # ratios and "beats both" for this row


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        v = value * 1000
        return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"
    if unit == "MiB":
        return f"{value:.1f}"
    return f"{value:.4f}"


def _with_unit(value: float | None, unit: str) -> str:
    text = _fmt(value, unit)
    return text if value is None else f"{text} {unit}"


def _value(results: Results, row: Row, peer: str) -> float | None:
    samples = results.get(row.metric, peer)
    return row.aggregate(samples) if samples else None


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return "n/a"
    if theirs == 0:
        return "1.00×" if ours == 0 else "∞"
    ratio = ours / theirs
    return f"{ratio:.2g}×" if ratio < 0.1 else f"{ratio:.2f}×"


def _beats_both(results: Results, row: Row) -> bool | None:
    ours = _value(results, row, OURS)
    theirs = [_value(results, row, peer) for peer in RIVALS]
    if ours is None or any(v is None for v in theirs):
        return None
    return all(ours < v for v in theirs if v is not None)


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else "yes" if ok else "**no**"


def met(ok: bool | None) -> str:
    """A target's "met" cell: ✓ or ✗, or n/a where it could not be measured."""
    return "n/a" if ok is None else "✓" if ok else "✗"


def table_row(cells: Sequence[str]) -> str:
    """One row of a markdown table."""
    return "| " + " | ".join(cells) + " |"


def _table(results: Results, peers: Sequence[str], rows: Sequence[Row]) -> list[str]:
    unit = rows[0].unit
    head = ["", *(f"{p} ({unit})" for p in peers)]
    head += [f"{OURS}/{r}" for r in RIVALS] + [f"{OURS} beats both"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.label, *(_fmt(_value(results, row, p), row.unit) for p in peers)]
        if row.compare:
            ours = _value(results, row, OURS)
            cells += [_ratio(ours, _value(results, row, r)) for r in RIVALS]
            cells.append(_mark(_beats_both(results, row)))
        else:
            cells += ["—"] * (len(RIVALS) + 1)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _sections(plan: Plan) -> list[tuple[str, list[Row]]]:
    startup = [Row(f"N = {n}", f"startup_{n}", median, "ms") for n in plan.startup_ns]
    startup += [
        Row(f"N = {n}, `procorch up` returned", f"ready_{n}", median, "ms", compare=False)
        for n in plan.startup_ns
    ]
    reps = plan.startup_reps
    return [
        (
            f"Startup: launch until N sleepers are alive (median of {reps} run(s))",
            startup,
        ),
        (
            f"Crash to replacement: SIGKILL of a child until a new one is alive "
            f"(N = {SMALL_N}, {plan.kills} kills at random moments)",
            [Row("median", "crash", median, "ms"), Row("max", "crash", max, "ms")],
        ),
        (
            f"`status` command: wall time of the whole command "
            f"(N = {SMALL_N}, median of {plan.status_runs} runs)",
            [Row("median", "status", median, "ms")],
        ),
        (
            f"Shutdown: stop command until no child is left (N = {IDLE_N})",
            [Row("median", "shutdown", median, "ms")],
        ),
        (
            f"Idle daemon resident memory at the end of {plan.idle_seconds:.0f} s idle "
            f"(N = {IDLE_N})",
            [Row("RSS", "rss", median, "MiB")],
        ),
        (
            f"Idle daemon CPU: user + system seconds over {plan.idle_seconds:.0f} s idle "
            f"(N = {IDLE_N})",
            [Row("CPU", "cpu", median, "s")],
        ),
    ]


def _targets(results: Results, plan: Plan) -> list[str]:
    rows = [row for _, section in _sections(plan) for row in section if row.compare]
    verdicts = [_beats_both(results, row) for row in rows]
    known = [v for v in verdicts if v is not None]
    crash = _value(results, Row("", "crash", median, "ms"), OURS)
    crash_max = _value(results, Row("", "crash", max, "ms"), OURS)
    status = _value(results, Row("", "status", median, "ms"), OURS)
    rss = _value(results, Row("", "rss", median, "MiB"), OURS)
    rss_sup = _value(results, Row("", "rss", median, "MiB"), "supervisord")
    better = f"{sum(known)} of {len(rows)} figures" if known else "n/a"
    return [
        "| target | procorch | met |",
        "|---|---|---|",
        f"| better than both peers on every figure | {better} | "
        f"{_mark(all(known) and len(known) == len(rows) if known else None)} |",
        f"| crash to replacement under 20 ms (median) | {_with_unit(crash, 'ms')} "
        f"(max {_with_unit(crash_max, 'ms')}) | "
        f"{_mark(None if crash is None else crash < 0.020)} |",
        f"| `procorch status` under 100 ms (median) | {_with_unit(status, 'ms')} | "
        f"{_mark(None if status is None else status < 0.100)} |",
        f"| daemon RSS at most supervisord's | {_with_unit(rss, 'MiB')} vs "
        f"{_with_unit(rss_sup, 'MiB')} | "
        f"{_mark(None if rss is None or rss_sup is None else rss <= rss_sup)} |",
    ]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """The machine, for a results header: cores, CPU model, memory, kernel."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({_cpu_model()}), {mem:.0f} GiB RAM, Linux {platform.release()}"


def _git_rev() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + ("+dirty" if git("status", "--porcelain", "--", "procorch") else "")


def _header(peers: Sequence[type[Peer]], command: str) -> list[str]:
    versions = ", ".join(
        f"{p.name} {p.version()}" + (f" (git {_git_rev()})" if p.name == OURS else "")
        for p in peers
    )
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        f"- python: {platform.python_version()}; peers: {versions}",
        f"- reproduce: `{command}`",
        "- every peer at its defaults, running the same trivial service (`bench/sleeper.py`); "
        "times, memory and CPU: lower is better; ratios are procorch ÷ peer (below 1× is "
        "better for procorch).",
    ]


def render(results: Results, plan: Plan, peers: Sequence[type[Peer]], command: str) -> str:
    """The markdown section, markers included."""
    names = [p.name for p in peers]
    lines = [BEGIN, "## Supervisors: procorch vs supervisord vs circus", ""]
    lines += _header(peers, command) + [""]
    for title, rows in _sections(plan):
        lines += [f"### {title}", ""] + _table(results, names, rows) + [""]
    lines += ["### Targets (from the issue)", ""] + _targets(results, plan) + [""]
    notes = [f"- {peer} skipped: {why}" for peer, why in results.skipped.items()]
    notes += [f"- {peer}: {text}" for peer, texts in results.notes.items() for text in texts]
    if notes:
        lines += ["### Notes", "", *notes, ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, name: str = "supervisors") -> None:
    """Put `section` (which starts and ends with `name`'s markers) into `path`, replacing
    an earlier one of the same name and keeping everything else."""
    begin, end_marker = markers(name)
    text = path.read_text() if path.exists() else FILE_HEADER
    start, end = text.find(begin), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + section.rstrip("\n") + text[end + len(end_marker) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text if text.endswith("\n") else text + "\n")


def publish(section: str, name: str, write: bool = True) -> None:
    """Print a benchmark's section and, unless told not to (--no-write), put it into
    bench/RESULTS.md."""
    print(section)
    if write:
        path = REPO_ROOT / "bench" / "RESULTS.md"
        write_section(path, section, name)
        print(f"[bench] wrote {path}", file=sys.stderr, flush=True)
