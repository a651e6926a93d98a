"""The dashboard benchmark's plan, its results and their report (the "dashboard" section of
RESULTS.md): what bench/gateway/dashboard.py measures, what it found, and how that reads as
markdown. The runner imports this; this imports nothing of the runner's."""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from dataclasses import dataclass, field
from statistics import median
from typing import TYPE_CHECKING

from harness import stats
from harness.report import git_rev, header, markers, met, table_row

if TYPE_CHECKING:  # needs the venv's packages: imported after the re-exec
    from gateway.wrk import Load, WrkResult

SECTION = "dashboard"
OVERVIEW_LIMIT_MS = 5.0  # the issue's: the overview's data per update
QUERY_LIMIT_MS = 20.0  # the issue's: the jobs page's query
API_SHARE = 0.90  # the issue's: the API's requests/s with dashboards open ÷ with none


@dataclass(frozen=True)
class Plan:
    sleepers: int  # command services (`sleep`), beside UserService, JobWorker and Gateway
    jobs: int  # in the store
    refreshes: int  # timed refreshes of the overview's data
    cached_calls: int  # timed polls answered from the shared data
    http_requests: int  # timed requests per HTTP figure
    query_reps: int  # timed runs of each jobs page query
    wrk_seconds: int  # each measured wrk run
    warmup: int  # seconds of one unmeasured wrk run before the first (0: none)
    rounds: int  # of "none open" and "N open" each, alternating
    idle_seconds: int  # the gateway's CPU with none and N open, without wrk
    age: bool  # let the N open dashboards fill the gateway's history (ten minutes) first
    dashboards: int = 20
    settle: float = 2.0  # seconds the dashboards poll before wrk starts


FULL = Plan(
    sleepers=50,
    jobs=100_000,
    refreshes=200,
    cached_calls=10_000,
    http_requests=50,
    query_reps=30,
    wrk_seconds=8,
    warmup=1,
    rounds=7,  # the runs of GET /users/1 vary by a sixth from one to the next on this VM
    idle_seconds=10,
    age=False,
)
QUICK = Plan(
    sleepers=10,
    jobs=10_000,
    refreshes=50,
    cached_calls=2_000,
    http_requests=20,
    query_reps=20,
    wrk_seconds=2,
    warmup=0,
    rounds=3,
    idle_seconds=3,
    age=False,
)


@dataclass
class Query:
    """One jobs page query, as the page asks it, and what it cost."""

    label: str
    params: dict[str, str]  # GET /api/jobs's query string
    matching: int = 0  # the page's `total`
    api: list[float] = field(default_factory=list)  # Jobs.list, seconds
    select: list[float] = field(default_factory=list)  # its page SELECT alone
    count: list[float] = field(default_factory=list)  # its count(*) alone
    http: list[float] = field(default_factory=list)  # the whole GET /api/jobs request
    plans: list[tuple[str, list[str]]] = field(default_factory=list)  # (statement, plan lines)


@dataclass
class Poll:
    """What the simulated dashboards saw while wrk ran."""

    status: int  # 200, another, or 0 for no answer
    seconds: float


@dataclass
class Results:
    services: int = 0
    replicas: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # the store's jobs by status
    populate_seconds: float = 0.0
    overview: dict[str, list[float]] = field(default_factory=dict)  # figure -> seconds
    overview_bytes: dict[str, int] = field(default_factory=dict)  # fresh, full, served
    queries: list[Query] = field(default_factory=list)
    api_runs: dict[int, list[WrkResult]] = field(default_factory=dict)  # dashboards -> runs
    polls: list[Poll] = field(default_factory=list)
    cpu: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # dashboards -> cores
    idle_cpu: dict[str, float] = field(default_factory=dict)  # none, young, full -> cores
    idle_polls: dict[str, int] = field(default_factory=dict)  # young, full -> polls
    history: dict[str, int] = field(default_factory=dict)  # young, full -> the gateway's points
    aged_seconds: float = 0.0  # until the gateway's history was full
    load: list[float] = field(default_factory=list)  # 1-minute load average, start and end
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- figures -----------------------------------------------------------------------------


def p95(samples: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    return stats.nearest_rank(sorted(samples), 95)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    ms = seconds * 1000
    if ms < 0.1:
        return f"{ms * 1000:.1f} µs"
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def _med(samples: list[float]) -> float | None:
    return median(samples) if samples else None


def _rate(value: float) -> str:
    return f"{value:,.0f}"


# -- the sections ------------------------------------------------------------------------


def _kib(results: Results, key: str) -> str:
    size = results.overview_bytes.get(key)
    return "?" if size is None else f"{size / 1024:,.0f} KiB"


def _overview_rows(results: Results) -> list[tuple[str, str]]:
    return [
        (
            "full",
            "one update, the history full (600 points a series: a gateway whose dashboards "
            "have been open ten minutes): `LiveView` refresh: the daemon's `status` over the "
            "control socket, the job counts, a point added to each series, the JSON a "
            f"polling page gets ({_kib(results, 'poll')})",
        ),
        (
            "fresh",
            "one update, the history empty (a fresh gateway)",
        ),
        ("status", "… of it: the daemon's `status` round trip alone"),
        ("stats", "… of it: the job store's `Jobs.stats()` alone"),
        ("dumps", "… of it: encoding the data once (`orjson`)"),
        (
            "open",
            "an update and a page opening: the whole history as well "
            f"({_kib(results, 'full')}), built once per update for all pages opening",
        ),
        ("cached", "a poll between updates: the shared data handed out (an update every 1 s)"),
        (
            "http",
            f"`GET /api/overview` over HTTP, the whole history ({_kib(results, 'served')} as "
            "served then; bearer token, keep-alive, back to back): a page opening",
        ),
        ("http_since", "… with `since`, as a page polling asks: each series' newest point"),
    ]


def _overview(results: Results) -> list[str]:
    lines = [table_row(["figure", "median", "p95", "samples"]), "|---|---|---|---|"]
    for key, label in _overview_rows(results):
        samples = results.overview.get(key, [])
        if samples:
            lines.append(
                table_row([label, _ms(median(samples)), _ms(p95(samples)), f"{len(samples):,}"])
            )
    return lines


def _queries(results: Results) -> list[str]:
    head = [
        "query (`GET /api/jobs?…`, 50 a page)",
        "matching jobs",
        "`Jobs.list` median",
        "p95",
        "… page SELECT",
        "… count(*)",
        "over HTTP median",
        f"< {QUERY_LIMIT_MS:g} ms",
    ]
    lines = [table_row(head), "|---" * len(head) + "|"]
    for q in results.queries:
        api = _med(q.api)
        lines.append(
            table_row(
                [
                    q.label,
                    f"{q.matching:,}",
                    _ms(api),
                    _ms(p95(q.api)) if q.api else "n/a",
                    _ms(_med(q.select)),
                    _ms(_med(q.count)),
                    _ms(_med(q.http)),
                    met(None if api is None else api * 1000 < QUERY_LIMIT_MS),
                ]
            )
        )
    return lines


def _rps(runs: list[WrkResult]) -> list[float]:
    return [r.rps for r in runs]


def pair_ratios(results: Results, plan: Plan) -> list[float]:
    """Each round's N open ÷ its none open, run just before: the rounds alternate, so a
    pair shares the machine's state, and a drift over the run (seen: the none rounds
    rising by a third from the first to the last) falls on both of a pair."""
    none, some = _rps(results.api_runs.get(0, [])), _rps(results.api_runs.get(plan.dashboards, []))
    return [b / a for a, b in zip(none, some, strict=False) if a]


def api_ratio(results: Results, plan: Plan) -> float | None:
    """The median of the rounds' pairs' ratios (see `pair_ratios`)."""
    ratios = pair_ratios(results, plan)
    return median(ratios) if ratios else None


def _api(results: Results, plan: Plan) -> list[str]:
    head = ["dashboards open", *(f"round {i + 1}" for i in range(plan.rounds))]
    head += ["median req/s", "range", "p99 (median of rounds)"]
    lines = [table_row(head), "|---" * len(head) + "|"]
    for open_ in (0, plan.dashboards):
        runs = results.api_runs.get(open_, [])
        if not runs:
            continue
        rps = _rps(runs)
        cells = [f"{open_}" if open_ else "none", *(_rate(x) for x in rps)]
        cells += ["—"] * (plan.rounds - len(rps))
        cells += [
            _rate(median(rps)),
            f"{_rate(min(rps))}–{_rate(max(rps))}",
            f"{median(r.p99_ms for r in runs):.2f} ms",
        ]
        lines.append(table_row(cells))
    ratios = pair_ratios(results, plan)
    if ratios:
        cells = [f"{plan.dashboards} ÷ none", *(f"{r:.3f}" for r in ratios)]
        cells += ["—"] * (plan.rounds - len(ratios))
        cells += [f"**{median(ratios):.3f}**", f"{min(ratios):.3f}–{max(ratios):.3f}", ""]
        lines.append(table_row(cells))
        none = _rps(results.api_runs.get(0, []))
        some = _rps(results.api_runs.get(plan.dashboards, []))
        lines += [
            "",
            f"Ratio, {plan.dashboards} open ÷ none: **{median(ratios):.3f}**, the median of "
            "the rounds' ratios (each round's pair ran back to back; the medians of the two "
            f"rows give {median(some) / median(none):.3f}).",
        ]
    per_cpu = {
        open_: [
            run.rps / cpu["Gateway"]
            for run, cpu in zip(runs, results.cpu.get(open_, []), strict=False)
            if cpu.get("Gateway")
        ]
        for open_, runs in results.api_runs.items()
    }
    none, some = per_cpu.get(0), per_cpu.get(plan.dashboards)
    if none and some:
        lines += [
            "",
            "The same per second of the gateway's own CPU (requests/s ÷ the cores it used, "
            "below): other work on the machine that takes the gateway's core lowers its "
            "requests/s, not this. "
            f"None open: {' / '.join(_rate(x) for x in none)}; {plan.dashboards} open: "
            f"{' / '.join(_rate(x) for x in some)}; ratio of the medians "
            f"{median(some) / median(none):.3f}.",
        ]
    return lines


def _idle(results: Results, plan: Plan) -> list[str]:
    """The quiet figures: open dashboards' CPU cost to a gateway with nothing else to do."""
    none = results.idle_cpu.get("none")
    if none is None:
        return []
    lines = [
        f"What the dashboards cost the gateway without wrk, its CPU over {plan.idle_seconds} s: "
        f"{none:.3f} cores with none open;"
    ]
    stages = {
        "young": "at once (the gateway's history: {points} point(s))",
        "full": "once they had kept it polling until its history was full ({points} points, "
        f"after {results.aged_seconds:.0f} s)",
    }
    for stage, when in stages.items():
        used, polls = results.idle_cpu.get(stage), results.idle_polls.get(stage)
        if used is None or not polls:
            continue
        extra = used - none
        per_poll = extra * plan.idle_seconds / polls
        lines.append(
            f"{used:.3f} with {plan.dashboards} open "
            + when.format(points=results.history.get(stage, "?"))
            + f": their {polls} polls cost it {extra:.1%} of a core, {_ms(per_poll)} of CPU "
            "a poll (an update of the data a second included);"
        )
    if not plan.age:
        lines.append(
            "(this run did not wait for the history to fill, `--age` does: a polling page "
            "gets each series' newest point whatever its length)"
        )
    return [" ".join(lines).rstrip(";") + "."]


def _cpu(results: Results, plan: Plan) -> list[str]:
    """The cores each process used while wrk ran: where the dashboards' cost lands."""
    names = list(dict.fromkeys(name for runs in results.cpu.values() for r in runs for name in r))
    if not names:
        return []
    head = ["dashboards open", *(f"{name} (cores)" for name in names)]
    lines = [table_row(head), "|---" * len(head) + "|"]
    for open_, runs in results.cpu.items():
        cells = [f"{open_}" if open_ else "none"]
        for name in names:
            used = [r[name] for r in runs if name in r]
            cells.append(f"{median(used):.2f}" if used else "—")
        lines.append(table_row(cells))
    return [
        "CPU while wrk ran (user + system seconds ÷ wall seconds, median of the rounds; wrk "
        "itself and the harness are not counted):",
        "",
        *lines,
    ]


def _polls(results: Results, plan: Plan) -> list[str]:
    if not results.polls:
        return []
    statuses = Counter(p.status for p in results.polls)
    seconds = [p.seconds for p in results.polls if p.status == 200]
    window = plan.rounds * plan.wrk_seconds
    text = (
        f"While wrk ran, the {plan.dashboards} dashboards polled `GET /api/overview` "
        f"{len(results.polls):,} times in {window} s ({len(results.polls) / window:.1f}/s): "
        f"{statuses[200]:,} answered 200"
    )
    others = sorted(status for status in statuses if status != 200)
    for status in others:
        text += f", {statuses[status]:,} " + (f"answered {status}" if status else "got no answer")
    if seconds:
        text += f"; a poll took {_ms(median(seconds))} at the median, {_ms(p95(seconds))} at p95"
    return [text + "."]


def _targets(results: Results, plan: Plan) -> list[str]:
    lines = [table_row(["target", "procorch", "met"]), "|---|---|---|"]
    full, fresh = results.overview.get("full", []), results.overview.get("fresh", [])
    services = f"{results.services} services" if results.services else "the services"
    jobs = f"{sum(results.counts.values()):,} jobs"
    if full:
        shown = f"{_ms(median(full))} (p95 {_ms(p95(full))}) with the history full"
        if fresh:
            shown += f"; {_ms(median(fresh))} with it empty"
        lines.append(
            table_row(
                [
                    f"the overview's data: < {OVERVIEW_LIMIT_MS:g} ms of server time per update "
                    f"({services}, {jobs}; median, the history full)",
                    shown,
                    met(median(full) * 1000 < OVERVIEW_LIMIT_MS),
                ]
            )
        )
    timed = [(q, median(q.api)) for q in results.queries if q.api]
    if timed:
        slowest, worst = max(timed, key=lambda pair: pair[1])
        over = [q.label for q, api in timed if api * 1000 >= QUERY_LIMIT_MS]
        shown = f"slowest: {slowest.label}, {_ms(worst)} (over HTTP {_ms(_med(slowest.http))})"
        if over:
            shown += "; over the target: " + ", ".join(over)
        lines.append(
            table_row(
                [
                    f"the jobs page's query: < {QUERY_LIMIT_MS:g} ms ({jobs}; each of the "
                    f"{len(timed)} queries above, median)",
                    shown,
                    met(not over),
                ]
            )
        )
    ratio = api_ratio(results, plan)
    ratios = pair_ratios(results, plan)
    shown = "n/a" if ratio is None else f"{ratio:.1%} (rounds {min(ratios):.0%}–{max(ratios):.0%})"
    lines.append(
        table_row(
            [
                f"{plan.dashboards} open dashboards leave `GET /users/1` (one hop) at ≥ "
                f"{API_SHARE:.0%} of the requests/s with none open (median of {plan.rounds} "
                "rounds' ratios)",
                shown,
                met(None if ratio is None else ratio >= API_SHARE),
            ]
        )
    )
    return lines


def _statement(sql: str) -> str:
    """A statement as the plans list shows it: the page's long column list elided."""
    sql = " ".join(sql.split())
    head, sep, rest = sql.partition(" FROM ")
    return (head if head.startswith("SELECT count(") else "SELECT …") + sep + rest


def _plans(results: Results) -> list[str]:
    """SQLite's plan for each of the jobs page's statements (EXPLAIN QUERY PLAN): where a
    query is slow, which step scans."""
    lines = []
    for q in results.queries:
        api = _med(q.api)
        slow = api is not None and api * 1000 >= QUERY_LIMIT_MS
        steps = [
            f"`{_statement(sql)}` → " + "; ".join(f"`{step}`" for step in plan)
            for sql, plan in q.plans
        ]
        lines.append(f"- {q.label}{' (**over the target**)' if slow else ''}: " + ", ".join(steps))
    return lines


def _versions(results: Results) -> str:
    found = [f"{name} {importlib.metadata.version(name)}" for name in ("flask", "waitress")]
    found.append(f"procorch {importlib.metadata.version('procorch')} (git {git_rev()})")
    found.append(f"wrk {results.versions.get('wrk', '?')}")
    return ", ".join(found)


def _header(results: Results, plan: Plan, load: Load, command: str) -> list[str]:
    counts = ", ".join(f"{n:,} {status}" for status, n in results.counts.items() if n)
    return header(
        command,
        machine_note="the stack, the harness and wrk share these cores",
        loads=", ".join(f"{x:.2f}" for x in results.load),
        versions=_versions(results),
        method=[
            f"the stack: `procorch up` with {plan.sleepers} command services (`sleep`), "
            "UserService, JobWorker (2 replicas, SQLite) and the Gateway (waitress, 8 threads): "
            f"{results.services} services, {results.replicas} replicas. The store holds "
            f"{sum(results.counts.values()):,} jobs ({counts}), submitted and run before the "
            f"measurements ({results.populate_seconds:.0f} s). wrk `-t {load.threads} "
            f"-c {load.connections} -d {load.seconds}s`. Method: the docstring of "
            "`bench/gateway/dashboard.py` and the notes below."
        ],
    )


def _notes(results: Results, plan: Plan) -> list[str]:
    notes = [f"- {note}" for note in results.notes]
    notes += [
        "- Server time per update is measured in the harness's own process, with the "
        "gateway's code (`procorch.gateway.live.LiveView` with refresh 0, so each call "
        "is an update) against the running daemon and store: the cost a gateway pays once "
        "a second while any dashboard is open, however many. Each update also adds a point "
        "to the history (`procorch/gateway/history.py`: 600 a series, one a second); a "
        "polling page gets each series' newest point (`since`), a page opening the whole "
        "history, built once per update: the 'history full' rows, after 600 untimed "
        "updates, are the steady state. The HTTP rows add the gateway's request handling, "
        "on the running gateway.",
        f"- The simulated dashboards: one process, {plan.dashboards} threads, each with its own "
        "keep-alive connection and the session cookie a browser gets from `/ui?token=…`, "
        "doing what the overview page does: `GET /api/overview`, whole the first time and "
        "then with `since` (the newest point it holds), the JSON decoded, then 1 s until "
        "the next poll (the page's timer starts "
        "when an answer is in). They start 1/20 s apart and poll for "
        f"{plan.settle:g} s before wrk starts. None open and {plan.dashboards} open alternate, "
        "round by round, so drift of the shared machine's load falls on both. "
        + (
            "Before the rounds, the dashboards kept the gateway polling until its history "
            "was full, so the rounds see the steady state."
            if plan.age
            else "This run did not wait for the gateway's history to fill (`--age` does): "
            "the polls of the rounds carry each series' newest point whatever its length."
        ),
        "- The simulated dashboards share the 2 cores with the stack and wrk (their process's "
        "CPU is in the table above: mostly decoding the JSON), which a browser on another "
        "machine would not take from the stack: the comparison errs against the dashboards.",
    ]
    return notes


def render(results: Results, plan: Plan, load: Load, command: str) -> str:
    """The markdown section, markers included."""
    begin, end = markers(SECTION)
    lines = [
        begin,
        "## Dashboard: the overview's and the jobs page's server time, and open dashboards "
        "against the API",
        "",
        *_header(results, plan, load, command),
        "",
        "### The overview's data",
        "",
        *_overview(results),
        "",
        f"### The jobs page's query ({sum(results.counts.values()):,} jobs)",
        "",
        "`Jobs.list(status, 50, offset, function, queue)` as `GET /api/jobs` calls it: median "
        f"and p95 of {plan.query_reps} runs each; its two statements timed alone on a "
        f"connection of the harness's own; over HTTP: median of {plan.http_requests} requests "
        "(bearer token, keep-alive).",
        "",
        *_queries(results),
        "",
        f"### {plan.dashboards} open dashboards vs none: `GET /users/1` requests/s",
        "",
        *_idle(results, plan),
        "",
        *_api(results, plan),
        "",
        *_polls(results, plan),
        "",
        *_cpu(results, plan),
        "",
        "### Targets (from the issue)",
        "",
        *_targets(results, plan),
        "",
        "### Query plans",
        "",
        *_plans(results),
        "",
        "### Notes",
        "",
        *_notes(results, plan),
        "",
        end,
    ]
    return "\n".join(lines) + "\n"
