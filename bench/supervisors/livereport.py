"""The live-operations benchmark's results as markdown: one section per part, printed and
kept in RESULTS.md between the part's markers ("live-reload", "live-rolling"), so a run of
one part (`--parts`) replaces only its own section and the other benchmarks' stay."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

from harness.report import git_rev, header, markers, met, table_row

from supervisors import livereload, liveroll, report
from supervisors.httpload import KINDS
from supervisors.metrics import Results
from supervisors.peers import ALL_PEERS, VARIANTS

SECTION = "live-{part}"  # per part
TITLES = {
    "reload": f"Reload: one edit of a {livereload.SIZE}-program stack applied live, procorch "
    "vs supervisord vs circus",
    "rolling": f"Rolling restart of a {liveroll.REPLICAS}-copy HTTP service under continuous "
    "load, procorch vs supervisord vs circus",
}
OURS = "procorch"

RELOAD_COMMANDS = {
    "supervisord": "`supervisorctl reread` + `update` (50 `[program:]`s)",
    "supervisord-group": "`supervisorctl reread` + `update` (the 50 in one `[group:]`)",
    "circus": "`circusctl reloadconfig`",
    "procorch": "`procorch reload`",
}
RESTART_COMMANDS = {
    "supervisord": "`supervisorctl restart web:*`; each copy binds the port (SO_REUSEPORT)",
    "supervisord-fcgi": "`supervisorctl restart web:*`; supervisord holds the socket "
    "(`[fcgi-program:]`, fd 0)",
    "circus": "`circusctl restart web`; circus holds the socket (`use_sockets`)",
    "procorch": "`procorch restart --rolling web`; procorch holds the socket (LISTEN_FDS)",
}


# The times set side by side as procorch ÷ peer (label: metric), per part.
RATIOS = {
    "reload": {"change live": "live", "done": "done", "command(s) returned": "returned"},
    "rolling": {
        "longest without a 2xx": "longest_gap",
        "command returned": "returned",
        "both copies new": "replaced",
    },
}


def _ms(samples: list[float]) -> str:
    """Median and range of samples in seconds, in ms."""
    if not samples:
        return "n/a"
    mid = report._fmt(median(samples), "ms")
    if len(samples) == 1:
        return mid
    return f"{mid} ({report._fmt(min(samples), 'ms')}–{report._fmt(max(samples), 'ms')})"


def _counts(samples: Sequence[float]) -> str:
    return ", ".join(f"{x:.0f}" for x in samples) if samples else "n/a"


def _ratios(results: Results, peers: Sequence[str], metrics: dict[str, str]) -> list[str]:
    """procorch's median time ÷ each other peer's: below 1× procorch took less time."""
    others = [peer for peer in peers if peer != OURS]
    if OURS not in peers or not others:
        return []

    def mid(metric: str, peer: str) -> float | None:
        samples = results.get(metric, peer)
        return median(samples) if samples else None

    lines = [
        "",
        f"{OURS} ÷ peer, of the medians (below 1×: {OURS} took less time):",
        "",
        table_row([f"{OURS} ÷", *metrics]),
        "|---|" + "---|" * len(metrics),
    ]
    for peer in others:
        ratios = [report._ratio(mid(m, OURS), mid(m, peer)) for m in metrics.values()]
        lines.append(table_row([peer, *ratios]))
    return lines


def _failed_per_run(results: Results, peer: str) -> list[float]:
    per_kind = [results.get(kind, peer) for kind in KINDS]
    return [sum(run) for run in zip(*per_kind, strict=True)]


def _failed(results: Results, peer: str) -> str:
    runs = _failed_per_run(results, peer)
    if not runs:
        return "n/a"
    kinds = [
        f"{kind} {sum(results.get(kind, peer)):.0f}"
        for kind in KINDS
        if sum(results.get(kind, peer))
    ]
    return _counts(runs) + (f" ({', '.join(kinds)})" if kinds else "")


def _reload(results: Results, peers: Sequence[str], runs: int) -> list[str]:
    untouched = livereload.SIZE - 2
    lines = [
        f"Median and range of {runs} run(s). The edit: `{livereload.CHANGED}`'s environment "
        f"changed, `{livereload.ADDED}` added, "
        f"`{livereload.REMOVED}` removed. Live: the new `{livereload.CHANGED}` (its new "
        f"environment read from /proc) and `{livereload.ADDED}` running, "
        f"`{livereload.REMOVED}` gone. Done: also the old `{livereload.CHANGED}` gone and the "
        "command(s) returned. Times from issuing the (first) command.",
        "",
        table_row(
            [
                "peer",
                "command(s)",
                "change live (ms)",
                "done (ms)",
                "command(s) returned (ms)",
                f"untouched programs restarted (of {untouched}), per run",
            ]
        ),
        "|---|---|---|---|---|---|",
    ]
    for peer in peers:
        lines.append(
            table_row(
                [
                    peer,
                    RELOAD_COMMANDS[peer],
                    _ms(results.get("live", peer)),
                    _ms(results.get("done", peer)),
                    _ms(results.get("returned", peer)),
                    _counts(results.get("restarted", peer)),
                ]
            )
        )
    return lines


def _rolling(results: Results, peers: Sequence[str], runs: int) -> list[str]:
    lines = [
        f"{runs} run(s); times: median and range. Load: 4 client threads, a new connection "
        f"per request, from {liveroll.LEAD:g} s before "
        f"the restart command until {liveroll.TAIL:g} s after it returned and both copies were "
        "new. Failed connections and non-2xx count over that whole load run; per run.",
        "",
        table_row(
            [
                "peer",
                "restart",
                "failed connections, per run",
                "non-2xx, per run",
                "2xx during the restart (median)",
                "longest without a 2xx (ms)",
                "the same before the restart (ms)",
                "command returned (ms)",
                "both copies new (ms)",
            ]
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for peer in peers:
        served = results.get("served", peer)
        lines.append(
            table_row(
                [
                    peer,
                    RESTART_COMMANDS[peer],
                    _failed(results, peer),
                    _counts(results.get("non_2xx", peer)),
                    f"{median(served):.0f}" if served else "n/a",
                    _ms(results.get("longest_gap", peer)),
                    _ms(results.get("gap_before", peer)),
                    _ms(results.get("returned", peer)),
                    _ms(results.get("replaced", peer)),
                ]
            )
        )
    return lines


def _target(part: str, results: Results) -> list[str]:
    lines = ["| target (from the issue) | procorch | met |", "|---|---|---|"]
    if part == "reload":
        restarted = results.get("restarted", OURS)
        worst = max(restarted) if restarted else None
        lines.append(
            f"| no untouched program restarted | "
            f"{'n/a' if worst is None else f'{worst:.0f} at most'} | "
            f"{met(None if worst is None else worst == 0)} |"
        )
    else:
        failed = _failed_per_run(results, OURS)
        non_2xx = results.get("non_2xx", OURS)
        known = bool(failed) and bool(non_2xx)
        got = f"{sum(failed):.0f} failed, {sum(non_2xx):.0f} non-2xx" if known else "n/a"
        lines.append(
            "| zero failed connections and zero non-2xx during the rolling restart | "
            f"{got} | {met(sum(failed) + sum(non_2xx) == 0 if known else None)} |"
        )
    return lines


def _header(
    peers: Sequence[str], loads: Sequence[tuple[float, float, float]], command: str
) -> list[str]:
    classes = {p.name: p for p in (*ALL_PEERS, *VARIANTS)}
    versions = ", ".join(
        dict.fromkeys(f"{classes[p].package} {classes[p].version()}" for p in peers if p in classes)
    )
    start, end = (", ".join(f"{x:.2f}" for x in triple) for triple in (loads[0], loads[-1]))
    return header(
        command,
        loads=f"{start} at the start, {end} at the end (1, 5, 15 min; other work on the "
        "machine shares the cores with the daemons, the harness and the load)",
        versions=f"{versions}; procorch git {git_rev()}",
        method=[
            "every peer at its defaults; the configs set only paths and the programs. Times "
            "are wall time from issuing the command, the harness polling /proc every 5 ms."
        ],
    )


def render(
    part: str,
    results: Results,
    peers: Sequence[str],
    runs: int,
    loads: Sequence[tuple[float, float, float]],
    command: str,
) -> str:
    """The markdown section of one part ("reload" or "rolling"), markers included."""
    begin, end = markers(SECTION.format(part=part))
    lines = [begin, f"## {TITLES[part]}", "", *_header(peers, loads, command), ""]
    table = _reload if part == "reload" else _rolling
    lines += table(results, peers, runs) + _ratios(results, peers, RATIOS[part]) + [""]
    lines += ["### Target", "", *_target(part, results), ""]
    notes = [f"- {peer} skipped: {why}" for peer, why in results.skipped.items()]
    if notes:
        lines += ["### Notes", "", *notes, ""]
    lines.append(end)
    return "\n".join(lines) + "\n"
