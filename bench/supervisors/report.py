"""The supervisors comparison's `Results` as markdown: its section of RESULTS.md,
"supervisors" (markers, header and writing are harness.report's)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import median

from harness.report import git_rev as _git_rev
from harness.report import header, markers

from supervisors.metrics import IDLE_N, SMALL_N, Plan, Results
from supervisors.peers import Peer

BEGIN, END = markers("supervisors-compare")
OURS = "procorch"
RIVALS = ("supervisord", "circus")

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


def _header(peers: Sequence[type[Peer]], command: str) -> list[str]:
    versions = ", ".join(
        f"{p.name} {p.version()}" + (f" (git {_git_rev()})" if p.name == OURS else "")
        for p in peers
    )
    return header(
        command,
        versions=f"peers: {versions}",
        method=[
            "every peer at its defaults, running the same trivial service "
            "(`bench/supervisors/sleeper.py`); times, memory and CPU: lower is better; ratios "
            "are procorch ÷ peer (below 1× is better for procorch)."
        ],
    )


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
