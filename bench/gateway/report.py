"""The gateway benchmark's results as markdown: printed, and kept in the "gateway" section
of RESULTS.md (report.write_section)."""

from __future__ import annotations

import importlib.metadata

from harness.report import div as _div
from harness.report import git_rev, header, markers, met, table_row
from harness.report import rate as _rate
from harness.report import times as _times

from gateway.plan import Plan, Results
from gateway.wrk import Load, WrkResult

SECTION = "gateway-endpoints"
FLOOR, OURS, ORIGINAL = "hello", "procorch", "original"
LABELS = {FLOOR: "bare waitress hello", OURS: "procorch gateway", ORIGINAL: "original design"}
# endpoints that must reach 70 % of the hello's requests/s: one hop to a service or the store
ONE_HOP = ("user", "job_get", "job_pending")
ONE_HOP_SHARE = 0.70
P99_LIMIT_MS = 20.0


def _ms(got: WrkResult | None) -> str:
    if got is None:
        return "n/a"
    return f"{got.p99_ms:.2f}" if got.p99_ms < 10 else f"{got.p99_ms:.1f}"


def _rps(got: WrkResult | None) -> float | None:
    return None if got is None else got.rps


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _figures(results: Results, peers: list[str]) -> list[str]:
    head = ["endpoint"]
    for peer in peers:
        head += [f"{LABELS[peer]} req/s", f"{LABELS[peer]} p99 (ms)"]
    head += ["procorch ÷ hello (req/s)", "procorch ÷ original (req/s)"]
    lines = [table_row(head), "|---" * len(head) + "|"]
    floor = _rps(results.get(FLOOR, "hello"))
    for key, label in results.labels.items():
        cells = [label]
        for peer in peers:
            if (peer == FLOOR) != (key == "hello"):  # the hello serves its one route only
                cells += ["—", "—"]
            else:
                got = results.get(peer, key)
                cells += [_rate(_rps(got)), _ms(got)]
        ours = _rps(results.get(OURS, key))
        if key == "hello":
            cells += ["—", "—"]
        else:
            cells += [_pct(_div(ours, floor)), _times(_div(ours, _rps(results.get(ORIGINAL, key))))]
        lines.append(table_row(cells))
    return lines


def _targets(results: Results, load: Load) -> list[str]:
    floor = _rps(results.get(FLOOR, "hello"))
    # The floor's own p99 beside each: on a busy machine it shows how much of a tail is the
    # machine's (scheduling) rather than the gateway's.
    floor_p99 = f" (bare hello: {_ms(results.get(FLOOR, 'hello'))} ms)"
    lines = [table_row(["target", "procorch", "met"]), "|---|---|---|"]
    for key in ONE_HOP:
        ours = _rps(results.get(OURS, key))
        share = _div(ours, floor)
        lines.append(
            table_row(
                [
                    f"{results.labels.get(key, key)}: ≥ {ONE_HOP_SHARE:.0%} of the bare hello's "
                    "requests/s",
                    f"{_rate(ours)} req/s = {_pct(share)} of {_rate(floor)}",
                    met(None if share is None else share >= ONE_HOP_SHARE),
                ]
            )
        )
    for key, label in results.labels.items():
        got = results.get(OURS, key)
        if key != "hello":
            lines.append(
                table_row(
                    [
                        f"{label}: p99 < {P99_LIMIT_MS:g} ms at {load.connections} connections",
                        f"{_ms(got)} ms{floor_p99}",
                        met(None if got is None else got.p99_ms < P99_LIMIT_MS),
                    ]
                )
            )
    return lines


def _versions(results: Results) -> str:
    found = [
        f"{name} {importlib.metadata.version(name)}"
        for name in ("flask", "werkzeug", "waitress", "requests")
    ]
    found.append(f"procorch {importlib.metadata.version('procorch')} (git {git_rev()})")
    found.append(f"wrk {results.versions.get('wrk', '?')}")
    return ", ".join(found)


def _header(results: Results, plan: Plan, load: Load, command: str) -> list[str]:
    warm = f"after a {plan.warmup} s warm-up run" if plan.warmup else "without a warm-up run"
    return header(
        command,
        machine_note="wrk and the server under test share these cores",
        loads=", ".join(f"{x:.2f}" for x in results.load),
        versions=_versions(results),
        method=[
            f"wrk `-t {load.threads} -c {load.connections} -d {load.seconds}s --latency`, "
            f"keep-alive connections, per endpoint {warm}; one server at a time, each on a "
            "free loopback port. Method: `bench/README.md`."
        ],
    )


def _notes(results: Results, peers: list[str]) -> list[str]:
    notes = [f"- {note}" for note in results.notes]
    for peer in peers:
        for key in results.runs.get(peer, {}):
            got = results.get(peer, key)
            if got is not None and (got.non2xx or got.socket_errors):
                notes.append(
                    f"- {LABELS[peer]}, {results.labels[key]}: {got.non2xx} non-2xx answers, "
                    f"{got.socket_errors} socket errors of {got.requests:,} requests"
                )
    notes.append(
        "- Every answer was 2xx with no socket error, unless a note above says otherwise."
        if len(notes) == len(results.notes)
        else "- Requests/s count every answer, the failed ones too."
    )
    hellos = results.runs.get(FLOOR, {}).get("hello", [])
    if len(hellos) > 1:
        each = "; ".join(f"{r.rps:,.0f} req/s, p99 {r.p99_ms:.1f} ms" for r in hellos)
        notes.append(
            f"- {LABELS[FLOOR]}: measured before and again right after procorch ({each}); "
            "its figures pool the runs (requests/s over both, p99 the mean), so the floor of "
            "procorch's ratios brackets it in time. The two differ by how the machine's load "
            "drifted."
        )
    notes += [
        f"- {LABELS[ORIGINAL]}: `bench/gateway/original.py`, a bench peer rebuilt from the "
        "originals' "
        "descriptions: Flask's development server (`threaded=True`, its request log on, as "
        "they ran it), UserService and OrderService each a process reading a "
        "`multiprocessing.Queue`, the job worker a second development server reached with "
        "`requests` (a new connection per call); state in dicts in memory.",
    ]
    return notes


def render(results: Results, plan: Plan, load: Load, peers: list[str], command: str) -> str:
    """The markdown section, markers included."""
    begin, end = markers(SECTION)
    lines = [
        begin,
        "## Gateway: procorch's HTTP gateway vs a bare waitress hello and the original design",
        "",
        *_header(results, plan, load, command),
        "",
        "### Figures",
        "",
        "Requests/s: higher is better; p99 latency: lower is better. procorch ÷ hello is the "
        "share of the bare server's requests/s the gateway keeps.",
        "",
        *_figures(results, peers),
        "",
        "### Targets (from the issue)",
        "",
        *_targets(results, load),
        "",
        "### Notes",
        "",
        *_notes(results, peers),
        "",
        end,
    ]
    return "\n".join(lines) + "\n"
