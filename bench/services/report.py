"""The services benchmark's results as markdown: printed, and kept in RESULTS.md's
"services" section (between its markers, so the other benchmarks' sections stay)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from harness import report
from harness.report import div as _div
from harness.report import rate as _rate
from harness.report import times as _times

from services.peers import FLOOR, JSON, JSON_CODEC, MANAGER_POLL, ORIGINAL, OURS, PAYLOAD

SECTION = "services-calls"
PLACES = {
    "same": "one core",  # caller and server pinned to the same core
    "split": "two cores",  # caller on one core, the server side on the other
}

# (metric, column title, lower is better)
COLUMNS: list[tuple[str, str, bool]] = [
    *(
        (f"{q}_{where}", f"{q} round trip, {place} (µs)", True)
        for where, place in PLACES.items()
        for q in ("p50", "p99")
    ),
    *((f"tput1_{where}", f"calls/s, 1 caller, {place}", False) for where, place in PLACES.items()),
    ("tput4", "calls/s, 4 callers", False),
]


def _us(ns: float | None) -> str:
    if ns is None:
        return "n/a"
    us = ns / 1000
    return f"{us:.1f}" if us < 100 else f"{us:,.0f}"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _header(plan: Any, command: str, loads: tuple[float, ...]) -> list[str]:
    rounds = f"Median of {plan.rounds} rounds" if plan.rounds > 1 else "1 round"
    return report.header(
        command,
        machine_note="caller(s) and server share these cores",
        loads=f"{loads[0]:.2f}, {os.getloadavg()[0]:.2f} (other work on the machine competes "
        "for the same cores)",
        versions=f"procorch git {report.git_rev()}",
        method=[
            f"payload `{PAYLOAD}`, echoed back. Round trip: 1 caller process, "
            f"{plan.calls:,} sequential calls after {plan.warmup} warm-up calls, with the caller "
            "and the server side pinned to one core, then to two different cores. Throughput: "
            f"calls completed in a {plan.seconds:g} s window by 1 caller (in each placement) "
            f"and by 4 caller processes (placed by the scheduler). {rounds}, each round with a "
            "fresh server. Method: `bench/README.md`."
        ],
    )


def render(
    results: Any, plan: Any, names: list[str], command: str
) -> str:  # results: services.Results
    """The markdown section, markers included."""
    val: Callable[[str, str], float | None] = results.value
    begin, end = report.markers(SECTION)
    lines = [
        begin,
        "## Services: request/reply between two processes, procorch vs raw socket, "
        "mp.Queue, mp.Manager (and a minimal JSON protocol)",
        "",
        *_header(plan, command, results.load_at_start),
        "",
        "### Figures",
        "",
        report.table_row(["peer", *(title for _, title, _ in COLUMNS)]),
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name in names:
        cells = [_us(val(name, m)) if lower else _rate(val(name, m)) for m, _, lower in COLUMNS]
        lines.append(report.table_row([name, *cells]))
    lines += [
        "",
        "### procorch against each peer",
        "",
        "How many times faster procorch is: the peer's round trip ÷ procorch's, and "
        "procorch's calls/s ÷ the peer's. Above 1×: procorch is faster; below: slower.",
        "",
        report.table_row(["peer", *(title.replace(" (µs)", "") for _, title, _ in COLUMNS)]),
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name in names:
        if name != OURS:
            cells = [
                _times(
                    _div(val(name, m), val(OURS, m)) if lower else _div(val(OURS, m), val(name, m))
                )
                for m, _, lower in COLUMNS
            ]
            lines.append(report.table_row([name, *cells]))
    if plan.rounds > 1:
        lines += [
            "",
            "### p50 round trip in each round (µs)",
            "",
            "The figures above are medians of these; on a busy machine the two-core ones "
            "swing most.",
            "",
            report.table_row(["peer", *(place for place in PLACES.values())]),
            "|---" * (len(PLACES) + 1) + "|",
        ]
        for name in names:
            rounds = [
                " / ".join(_us(v) for v in results.figures.get(name, {}).get(f"p50_{w}", []))
                or "n/a"
                for w in PLACES
            ]
            lines.append(report.table_row([name, *rounds]))
    lines += [
        "",
        "### Targets (from the issue)",
        "",
        report.table_row(["target", "procorch", "met"]),
    ]
    lines.append("|---|---|---|")
    for where, place in PLACES.items():
        metric = f"p50_{where}"
        ours, floor, original = val(OURS, metric), val(FLOOR, metric), val(ORIGINAL, metric)
        vs_floor, vs_original = _div(ours, floor), _div(original, ours)
        lines += [
            report.table_row(
                [
                    f"p50 round trip within 3× the raw socket's ({place})",
                    f"{_us(ours)} µs = {_times(vs_floor)} the raw socket's {_us(floor)} µs",
                    report.met(None if vs_floor is None else vs_floor <= 3),
                ]
            ),
            report.table_row(
                [
                    f"p50 round trip at least 10× faster than {ORIGINAL} ({place})",
                    f"{_us(ours)} µs, {_times(vs_original)} faster than {_us(original)} µs",
                    report.met(None if vs_original is None else vs_original >= 10),
                ]
            ),
        ]
    lines += ["", "### Notes", "", *_notes(results), "", end]
    return "\n".join(lines) + "\n"


def _notes(results: Any) -> list[str]:
    val = results.value
    notes = [
        f"- {JSON}: not one of the issue's peers, a reference. The raw socket's server "
        "and caller, carrying procorch's message format (length-prefixed JSON with "
        "request_id, action, data, sender, sent_at; a reply with request_id, status, data) "
        f"encoded with {JSON_CODEC}, and doing nothing else: no validation, no statistics, "
        "no timeouts. It is about "
        "the least a Python JSON protocol can cost, so procorch minus it is procorch's "
        "own overhead.",
        "- Why two placements: on this machine (a VM) waking a process on the other core "
        "costs tens of µs, several times a whole same-core Unix-socket round trip, and an "
        "unpinned pair lands on one core or on two by luck of the launch. One core measures "
        "the software cost of each approach; two cores add the wake-ups to every peer.",
        f"- {ORIGINAL}: the caller polls the reply dict every {MANAGER_POLL * 1000:g} ms "
        "(the original slept 100 ms, which alone would put its round trip near 100 ms); "
        "each poll is a round trip to the manager process. On one core the first poll "
        "usually comes before the server has stored the reply, so most calls sleep once; "
        "with the server side on its own core the reply is often there at the first poll, "
        "unless other work delays the server on its core, so its two-core figure swings "
        "from round to round "
        f"(this run: {_fmt(val(ORIGINAL, 'sleeps_same'))} sleeps per call on one core, "
        f"{_fmt(val(ORIGINAL, 'sleeps_split'))} on two).",
        "- The 2 cores are all there is for caller(s), server, and mp.Manager's manager "
        "process or procorch's daemon: with 4 callers the run is CPU-bound, so throughput "
        "shows the CPU cost per call more than parallelism.",
    ]
    floor, json_p50, ours = val(FLOOR, "p50_same"), val(JSON, "p50_same"), val(OURS, "p50_same")
    if floor is not None and json_p50 is not None and ours is not None:
        notes.append(
            f"- On one core the 3× line is {_us(3 * floor)} µs; the {JSON}, which does "
            f"nothing but encode and decode the messages, takes {_us(json_p50)} µs "
            f"({_times(_div(json_p50, floor))} the raw socket), and procorch {_us(ours)} µs"
            + (
                f": procorch's own work (validation, dispatch, statistics, timeouts) is "
                f"{_us(ours - json_p50)} µs of its round trip."
                if ours > json_p50
                else "."
            )
        )
    for where, place in PLACES.items():
        best = _div(val(ORIGINAL, f"p50_{where}"), val(FLOOR, f"p50_{where}"))
        if best is not None and best < 10:
            notes.append(
                f"- On {place}, even the raw socket is only {_times(best)} faster than "
                f"{ORIGINAL} (p50): there the 10× target is out of reach of any protocol, "
                "procorch's included."
            )
    notes += [f"- {name} skipped: {why}" for name, why in results.skipped.items()]
    return notes
