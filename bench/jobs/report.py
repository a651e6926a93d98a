"""The jobs benchmark's results as markdown: printed, and kept in the "jobs" section of
RESULTS.md (report.write_section)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from harness import stats
from harness.area import Figure
from harness.report import git_rev, header, markers, met

from jobs.peers import ALL_PEERS, HUEY_PEERS, PROCORCH_PEERS, RQ_PEERS
from jobs.plan import FIB, Plan, Results, Workload, throughput_metric

LABELS = {p.name: p.label for p in ALL_PEERS}
SQLITE_TARGET = 2000.0  # jobs/s with 2 workers, and 5x SimpleWorker
REDIS_TARGET = 1200.0  # jobs/s with 2 workers, and 3x SimpleWorker
NOOP_SQLITE_TARGET = 5000.0  # jobs/s with 2 workers on the no-op, and 5x Huey's best
RIVALS = {"RQ": RQ_PEERS, "Huey": HUEY_PEERS}


def _p(q: int) -> Callable[[list[float]], float]:
    def percentile(samples: list[float]) -> float:
        return stats.percentile(samples, q)

    return percentile


@dataclass(frozen=True)
class Row:
    label: str
    metric: str
    aggregate: Callable[[list[float]], float]
    higher_is_better: bool


def _rows(plan: Plan) -> list[Row]:
    rows = [
        Row(
            f"enqueue, one call per job ({plan.enqueue_single} jobs)",
            "enqueue_single",
            median,
            True,
        ),
        Row(
            f"enqueue, one batched call ({plan.enqueue_batch} jobs)", "enqueue_batch", median, True
        ),
    ]
    rows += [
        Row(
            f"end to end, {w} worker{'s' if w > 1 else ''} ({plan.jobs} jobs)",
            throughput_metric(w),
            median,
            True,
        )
        for w in plan.pools
    ]
    rows += [
        Row("submit to done, p50", "latency", median, False),
        Row("submit to done, p99", "latency", _p(99), False),
    ]
    return rows


def _value(results: Results, row: Row, peer: str) -> float | None:
    samples = results.get(row.metric, peer)
    return row.aggregate(samples) if samples else None


def _fmt(value: float | None, row: Row) -> str:
    if value is None:
        return "n/a"
    if row.higher_is_better:  # a rate, jobs/s
        return f"{value:,.0f}"
    ms = value * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def _best(results: Results, row: Row, group: Sequence[str]) -> tuple[str, float] | None:
    """The best figure among `group`'s peers (the highest rate, the lowest latency)."""
    found = [(p, v) for p in group if (v := _value(results, row, p)) is not None]
    if not found:
        return None
    pick = max if row.higher_is_better else min
    return pick(found, key=lambda item: item[1])


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "n/a"
    ratio = ours / theirs
    if ratio < 0.1:
        return f"{ratio:.2g}×"
    return f"{ratio:.0f}×" if ratio >= 100 else f"{ratio:.1f}×" if ratio >= 10 else f"{ratio:.2f}×"


def _values_table(results: Results, peers: Sequence[str], rows: Sequence[Row]) -> list[str]:
    head = ["", *(LABELS[p] for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        unit = " (jobs/s)" if row.higher_is_better else ""
        cells = [row.label + unit, *(_fmt(_value(results, row, p), row) for p in peers)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratios_table(results: Results, peers: Sequence[str], rows: Sequence[Row]) -> list[str]:
    """procorch ÷ each rival and ÷ each rival family's best; with more than one family
    (RQ and Huey), ÷ each family's best only: the figures table has the rest."""
    ours = [p for p in PROCORCH_PEERS if p in peers]
    groups = {g: [p for p in group if p in peers] for g, group in RIVALS.items()}
    groups = {g: group for g, group in groups.items() if group}
    each = [p for group in groups.values() for p in group] if len(groups) == 1 else []
    head = [""]
    for p in ours:
        head += [f"{LABELS[p]} ÷ {LABELS[r]}" for r in each]
        head += [f"{LABELS[p]} ÷ best {g}" for g in groups]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.label]
        bests = {g: _best(results, row, group) for g, group in groups.items()}
        for p in ours:
            mine = _value(results, row, p)
            cells += [_ratio(mine, _value(results, row, r)) for r in each]
            cells += [_ratio(mine, best[1] if best else None) for best in bests.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _targets(results: Results, plan: Plan) -> list[str]:
    workers = max(plan.pools)
    tp = Row("", throughput_metric(workers), median, True)
    p50 = Row("", "latency", median, False)
    simple_tp = _value(results, tp, "rq-simple")
    simple_p50 = _value(results, p50, "rq-simple")
    lines = ["| target | measured | met |", "|---|---|---|"]
    for peer, floor, factor in (
        ("procorch-sqlite", SQLITE_TARGET, 5),
        ("procorch-redis", REDIS_TARGET, 3),
    ):
        rate = _value(results, tp, peer)
        lines.append(
            f"| {LABELS[peer]}, {workers} workers: ≥ {floor:,.0f} jobs/s end to end | "
            f"{_fmt(rate, tp)} jobs/s | {met(None if rate is None else rate >= floor)} |"
        )
        ratio = None if rate is None or not simple_tp else rate / simple_tp
        lines.append(
            f"| {LABELS[peer]}, {workers} workers: ≥ {factor}× SimpleWorker | "
            f"{_ratio(rate, simple_tp)} ({_fmt(simple_tp, tp)} jobs/s) | "
            f"{met(None if ratio is None else ratio >= factor)} |"
        )
    for peer in ("procorch-sqlite", "procorch-redis"):  # the defaults the targets are for
        mine = _value(results, p50, peer)
        ok = None if mine is None or simple_p50 is None else mine <= simple_p50 / 2
        lines.append(
            f"| {LABELS[peer]}: p50 submit to done ≤ ½ SimpleWorker's | "
            f"{_fmt(mine, p50)} vs {_fmt(simple_p50, p50)} | {met(ok)} |"
        )
    return lines


def _noop_targets(results: Results, plan: Plan, peers: Sequence[str]) -> list[str]:
    """The issue's: SQLite ≥ 5,000 jobs/s with 2 workers and ≥ 5× Huey's best; every figure
    of procorch (SQLite and Redis) ahead of every peer's."""
    workers = max(plan.pools)
    tp = Row("", throughput_metric(workers), median, True)
    rate = _value(results, tp, "procorch-sqlite")
    huey = _best(results, tp, [p for p in HUEY_PEERS if p in peers])
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines.append(
        f"| {LABELS['procorch-sqlite']}, {workers} workers: ≥ {NOOP_SQLITE_TARGET:,.0f} jobs/s "
        f"end to end | {_fmt(rate, tp)} jobs/s | "
        f"{met(None if rate is None else rate >= NOOP_SQLITE_TARGET)} |"
    )
    ratio = None if rate is None or huey is None or not huey[1] else rate / huey[1]
    lines.append(
        f"| {LABELS['procorch-sqlite']}, {workers} workers: ≥ 5× Huey's best | "
        f"{_ratio(rate, huey[1] if huey else None)} "
        f"({LABELS[huey[0]] if huey else 'n/a'}: {_fmt(huey[1] if huey else None, tp)} jobs/s) "
        f"| {met(None if ratio is None else ratio >= 5)} |"
    )
    rivals = [p for group in RIVALS.values() for p in group if p in peers]
    for mine in (p for p in ("procorch-sqlite", "procorch-redis") if p in peers):
        behind = []
        for row in _rows(plan):
            ours = _value(results, row, mine)
            best = _best(results, row, rivals)
            if ours is None or best is None:
                continue
            ahead = ours > best[1] if row.higher_is_better else ours < best[1]
            if not ahead:
                behind.append(f"{row.label}: {LABELS[best[0]]}")
        lines.append(
            f"| {LABELS[mine]}: every figure ahead of every peer | "
            f"{'; '.join(behind) or 'all ahead'} | {met(not behind)} |"
        )
    return lines


def _filesystem(path: Path) -> str:
    done = subprocess.run(
        ["df", "-T", str(path)], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return done[1].split()[1] if len(done) > 1 else "unknown"


WHAT = {
    "fib": "every peer computes F(n) mod 1,000,000,007 by fast doubling for the same random n "
    "in [0, 10**18)",
    "noop": "every peer runs `noop(*args, **kwargs)` (bench/harness/jobnoop.py) on the same "
    "small JSON "
    "payload (two arguments, five keyword arguments)",
}


def _header(
    results: Results, peers: Sequence[str], command: str, workdir: Path, workload: Workload
) -> list[str]:
    import redis

    versions = sorted({v for p, v in results.versions.items() if p in peers})
    versions = [v + (f" (git {git_rev()})" if v.startswith("procorch") else "") for v in versions]
    versions.append("redis-py " + redis.__version__)
    versions.append("redis-server " + results.versions.get("redis-server", "?"))
    return header(
        command,
        machine_note=f"work directory on {_filesystem(workdir.parent)}",
        loads=", ".join(f"{x:.1f}" for x in results.load)
        + f" on {os.cpu_count()} cores (the end includes the benchmark's own load; a start well "
        "above 0 means other work shared the machine, and noisier figures)",
        versions=", ".join(versions),
        method=[
            f"{WHAT[workload.name]}, no delay, no failures; one redis-server (no persistence) "
            "for RQ and procorch on Redis; rates are medians of the repetitions, higher is "
            "better; latencies: lower is better. See bench/README.md for what is and is not "
            "comparable."
        ],
    )


def render(
    results: Results,
    plan: Plan,
    peers: Sequence[str],
    command: str,
    workdir: Path,
    workload: Workload = FIB,
) -> str:
    """The markdown section, markers included."""
    rows = _rows(plan)
    rivals = " and ".join(g for g, group in RIVALS.items() if set(group) & set(peers)) or "RQ"
    begin, end = markers(workload.section)
    title = "Jobs" if workload.name == "fib" else "Jobs, a no-op with JSON arguments"
    lines = [begin, f"## {title}: procorch vs {rivals}", ""]
    lines += _header(results, peers, command, workdir, workload) + [""]
    lines += ["### Figures", ""] + _values_table(results, peers, rows) + [""]
    lines += [
        f"### Ratios: procorch ÷ {rivals}",
        "",
        "Above 1× is better for procorch on the rates, below 1× on the latencies.",
        "",
    ]
    lines += _ratios_table(results, peers, rows) + [""]
    targets = (
        _targets(results, plan) if workload.name == "fib" else _noop_targets(results, plan, peers)
    )
    lines += ["### Targets (from the issue)", ""] + targets + [""]
    notes = [f"- {LABELS[p]} skipped: {why}" for p, why in results.skipped.items()]
    notes += [f"- {LABELS[p]}: {t}" for p, texts in results.notes.items() for t in texts]
    notes.append(
        f"- {plan.latency_samples} single jobs per peer after {plan.latency_warmup} warm-ups, "
        f"{plan.latency_pause * 1000:.0f} ms apart; throughput: {plan.rounds} round(s) per "
        f"pool after a {plan.warmup_jobs}-job warm-up, 10 outputs per round checked against "
        f"the reference; enqueue: {plan.enqueue_reps} repetition(s) with no worker running."
    )
    lines += ["### Notes", "", *notes, ""]
    lines.append(end)
    return "\n".join(lines) + "\n"


# The figures and ratios the harness keeps over runs (bench/results/jobs.json).
FIGURES = {  # metric: (name, unit, higher is better, aggregate)
    "enqueue_single": ("enqueue one by one", "jobs/s", True, median),
    "enqueue_batch": ("enqueue batched", "jobs/s", True, median),
    throughput_metric(1): ("end to end 1 worker", "jobs/s", True, median),
    throughput_metric(2): ("end to end 2 workers", "jobs/s", True, median),
}
LATENCIES = {"p50": _p(50), "p99": _p(99)}


def figures(results: Results, workload: Workload) -> tuple[dict[str, Figure], dict[str, float]]:
    """Every peer's figures, and the ratios the issue's targets name: SQLite 2 ÷ 1 workers,
    procorch Redis p50 ÷ RQ SimpleWorker's, and procorch ÷ the best Huey (and RQ) on every
    figure, as a speed-up (for latencies: the rival's ÷ procorch's, so above 1 is better)."""
    w = workload.name
    values: dict[str, dict[str, float]] = {}  # figure name -> peer -> value
    figs: dict[str, Figure] = {}
    for metric, (label, unit, higher, agg) in FIGURES.items():
        for peer, samples in results.samples.get(metric, {}).items():
            if samples:
                values.setdefault(label, {})[peer] = agg(samples)
                figs[f"{w} {label} {peer}"] = Figure(agg(samples), unit, higher)
    for q, agg in LATENCIES.items():
        label = f"submit to done {q}"
        for peer, samples in results.samples.get("latency", {}).items():
            if samples:
                values.setdefault(label, {})[peer] = agg(samples)
                figs[f"{w} {label} {peer}"] = Figure(agg(samples), "ms")
    ratios: dict[str, float] = {}
    one = values.get("end to end 1 worker", {})
    two = values.get("end to end 2 workers", {})
    for peer in ("procorch-sqlite", "procorch-redis"):
        if one.get(peer) and two.get(peer):
            ratios[f"{w} {peer} 2 workers ÷ 1 worker"] = two[peer] / one[peer]
    p50 = values.get("submit to done p50", {})
    for peer in ("procorch-redis", "procorch-sqlite"):
        if p50.get(peer) and p50.get("rq-simple"):
            ratios[f"{w} {peer} p50 ÷ rq-simple p50"] = p50[peer] / p50["rq-simple"]
    for rival, group in RIVALS.items():
        for label, by_peer in values.items():
            theirs = [by_peer[p] for p in group if p in by_peer]
            if not theirs:
                continue
            latency = label.startswith("submit to done")
            best = min(theirs) if latency else max(theirs)
            for ours in ("procorch-sqlite", "procorch-redis"):
                if by_peer.get(ours) and best:
                    x = best / by_peer[ours] if latency else by_peer[ours] / best
                    ratios[f"{w} {ours} speed-up over best {rival}, {label}"] = x
    return figs, ratios
