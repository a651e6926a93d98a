"""One area's whole run: its command line, the venv, N repetitions of its parts, and the
figures and ratios over the runs as a Markdown summary and as JSON.

An area (bench/supervisors, bench/jobs, ...) is a list of parts; a part is one measurement
program (the supervisors comparison, the live operations, ...) whose `run(args)` measures
once and returns a `RunOutput`: its own Markdown sections (as it always wrote them), and its
headline figures and ratios (procorch ÷ a peer) as numbers. The harness runs every part
`--runs` times, in turn (part A, part B, then again), keeps the last run's detailed sections,
and reports each figure and ratio as the median of the runs with their range; a target is
"met" only when it holds in every run. Standard library only (it runs before the venv).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import args as benchargs
from harness import report, stats
from harness import venv as benchvenv

RESULTS_DIR = benchvenv.BENCH_DIR / "results"


@dataclass(frozen=True)
class Figure:
    """One figure of one run. `unit` is how it is shown: "ms" (value in seconds), "µs"
    (value in ns), "s", "MiB", "jobs/s", "req/s", "calls/s", "%", "count"."""

    value: float
    unit: str
    higher_is_better: bool = False


@dataclass
class RunOutput:
    sections: dict[str, str] = field(default_factory=dict)  # RESULTS.md section -> markdown
    figures: dict[str, Figure] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)  # "procorch ÷ peer, what" -> x
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """`key` (a ratio's or figure's name) compared with `bound` by `op` ("<=", "<", ">=", ">")."""

    text: str
    key: str
    op: str
    bound: float


@dataclass(frozen=True)
class Part:
    name: str
    run: Callable[[argparse.Namespace], RunOutput]
    packages: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()  # the part's peers when --peers is not given
    quick: bool = True  # part of --quick
    targets: tuple[Target, ...] = ()
    about: str = ""


@dataclass(frozen=True)
class Area:
    name: str  # bench/<name>, results/<name>.json, RESULTS.md section <name>
    title: str
    doc: str
    parts: tuple[Part, ...]
    options: Callable[[argparse.ArgumentParser], None] | None = None


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(area: Area, argv: list[str]) -> argparse.Namespace:
    names = ",".join(p.name for p in area.parts)
    peers = sorted({peer for p in area.parts for peer in p.peers})

    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--runs",
            type=int,
            default=None,
            help="repeat the area this many times; figures are medians with their range "
            "(default 3, 1 with --quick)",
        )
        parser.add_argument(
            "--parts",
            default=None,
            help=f"comma-separated subset of {names} (default: all; with --quick: "
            + ",".join(p.name for p in area.parts if p.quick)
            + ")",
        )
        if area.options is not None:
            area.options(parser)

    args = benchargs.parse(
        area.doc,
        argv,
        quick="a smoke run of under a minute or so per part, 1 run",
        peers=peers,
        extra=extra,
    )
    args.peers_given = any(a == "--peers" or a.startswith("--peers=") for a in argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    known = {p.name: p for p in area.parts}
    if args.parts is None:
        args.part_names = [p.name for p in area.parts if p.quick or not args.quick]
    else:
        args.part_names = args.parts.split(",")
        unknown = set(args.part_names) - set(known)
        if unknown:
            raise SystemExit(f"unknown part(s): {', '.join(sorted(unknown))}")
    return args


def main(area: Area, argv: list[str], script: str) -> int:
    args = parse_args(area, argv)
    parts = [p for p in area.parts if p.name in args.part_names]
    packages = tuple(dict.fromkeys(pkg for p in parts for pkg in p.packages))
    return benchvenv.main(
        script, argv, lambda _argv: args, lambda a: run(area, parts, a), packages or ("psutil",)
    )


def _part_args(args: argparse.Namespace, part: Part) -> argparse.Namespace:
    """The namespace a part sees: its own peers unless --peers named some of them."""
    mine = argparse.Namespace(**vars(args))
    if args.peers_given:
        wanted = [p for p in args.peers.split(",") if p in part.peers]
        mine.peers = ",".join(wanted or part.peers)
    else:
        mine.peers = ",".join(part.peers)
    return mine


def run(area: Area, parts: Sequence[Part], args: argparse.Namespace) -> int:
    benchargs.interrupt_on_sigterm()
    started = time.monotonic()
    loads = [os.getloadavg()[0]]
    outputs: list[dict[str, RunOutput]] = []
    for index in range(args.runs):
        got: dict[str, RunOutput] = {}
        for part in parts:
            log(f"[bench] {area.name}: run {index + 1}/{args.runs}, part {part.name}")
            try:
                got[part.name] = part.run(_part_args(args, part))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one part failing does not lose the others
                traceback.print_exc()
                got[part.name] = RunOutput(
                    notes=[f"{part.name} failed: {type(exc).__name__}: {exc}"]
                )
        outputs.append(got)
    seconds = time.monotonic() - started
    loads.append(os.getloadavg()[0])
    command = f"python bench/{area.name}" + (" --quick" if args.quick else "")
    command += f" --runs {args.runs}" if args.runs != (1 if args.quick else 3) else ""
    if args.parts:
        command += f" --parts {args.parts}"
    data = aggregate(area, parts, outputs, args, seconds, command)
    data["load_average"] = loads
    text = render(area, data)
    print(text)
    last = outputs[-1]
    for part in parts:
        for name, section in last.get(part.name, RunOutput()).sections.items():
            report.publish(section, name, write=not args.no_write)
    if not args.no_write:
        report.write_section(report.RESULTS_FILE, text, area.name)
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{area.name}.json"
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        log(f"[bench] wrote {report.RESULTS_FILE} ({area.name}) and {path}")
    log(f"[bench] {area.name}: done in {seconds:.0f} s")
    return 0


def _check(value: float, op: str, bound: float) -> bool:
    return {"<=": value <= bound, "<": value < bound, ">=": value >= bound, ">": value > bound}[op]


def aggregate(
    area: Area,
    parts: Sequence[Part],
    outputs: list[dict[str, RunOutput]],
    args: argparse.Namespace,
    seconds: float,
    command: str,
) -> dict[str, object]:
    """The JSON shape: area, runs, figures, ratios, targets, machine, notes."""
    figures: dict[str, list[Figure]] = {}
    ratios: dict[str, list[float]] = {}
    notes: list[str] = []
    runs = []
    for index, got in enumerate(outputs):
        run_figures: dict[str, float] = {}
        run_ratios: dict[str, float] = {}
        for part in parts:
            out = got.get(part.name, RunOutput())
            for name, fig in out.figures.items():
                figures.setdefault(name, []).append(fig)
                run_figures[name] = fig.value
            for name, x in out.ratios.items():
                ratios.setdefault(name, []).append(x)
                run_ratios[name] = x
            notes += [f"run {index + 1}: {n}" for n in out.notes]
        runs.append({"run": index + 1, "figures": run_figures, "ratios": run_ratios})
    fig_out = {
        name: {
            **stats.summary([f.value for f in figs]),
            "unit": figs[0].unit,
            "higher_is_better": figs[0].higher_is_better,
        }
        for name, figs in figures.items()
    }
    ratio_out = {name: stats.summary(xs) for name, xs in ratios.items()}
    targets = []
    for part in parts:
        for target in part.targets:
            values = ratios.get(target.key) or [f.value for f in figures.get(target.key, [])]
            if not values:
                verdict = "not measured"
            elif len(values) < len(outputs):
                verdict = "not measured in every run"
            elif all(_check(v, target.op, target.bound) for v in values):
                verdict = "met"
            elif _check(stats.summary(values)["median"], target.op, target.bound):
                verdict = "not met (met at the median, not in every run)"
            else:
                verdict = "not met"
            targets.append(
                {
                    "target": target.text,
                    "key": target.key,
                    "op": target.op,
                    "bound": target.bound,
                    "verdict": verdict,
                    **(stats.summary(values) if values else {}),
                }
            )
    return {
        "area": area.name,
        "command": command,
        "quick": bool(args.quick),
        "parts": [p.name for p in parts],
        "runs": runs,
        "figures": fig_out,
        "ratios": ratio_out,
        "targets": targets,
        "machine": report.machine_info(),
        "seconds": round(seconds, 1),
        "notes": notes,
    }


def fmt(value: float, unit: str) -> str:
    """A figure in its unit, with sensible digits."""
    if unit == "ms":
        v = value * 1000
    elif unit == "µs":
        v = value / 1000
    else:
        v = value
    if unit in ("jobs/s", "req/s", "calls/s", "count"):
        return f"{v:,.0f}"
    if unit == "%":
        return f"{v:.0f}"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def with_range(s: dict[str, float], unit: str) -> str:
    shown = "" if unit == "count" else f" {unit}"
    mid = fmt(s["median"], unit)
    if s["n"] < 2:
        return f"{mid}{shown}"
    return f"{mid}{shown} ({fmt(s['min'], unit)}–{fmt(s['max'], unit)})"


def ratio_with_range(s: dict[str, float]) -> str:
    def x(v: float) -> str:
        return f"{v:.2g}" if v < 0.1 else f"{v:.2f}" if v < 10 else f"{v:.1f}"

    if s["n"] < 2:
        return f"{x(s['median'])}×"
    return f"{x(s['median'])}× ({x(s['min'])}–{x(s['max'])})"


def _target_value(t: dict[str, object], data: dict[str, object]) -> str:
    if "median" not in t:
        return "n/a"
    key = str(t["key"])
    figures = data["figures"]
    assert isinstance(figures, dict)
    if key in figures:
        return with_range(t, figures[key]["unit"])  # type: ignore[arg-type]
    return ratio_with_range(t)  # type: ignore[arg-type]


def render(area: Area, data: dict[str, object]) -> str:
    """The area's summary section: every figure and ratio as median (range) over the runs,
    and one line per target."""
    n = len(data["runs"])  # type: ignore[arg-type]
    loads: list[float] = data.get("load_average", [])  # type: ignore[assignment]
    parts = ", ".join(data["parts"])  # type: ignore[arg-type]
    head = report.header(
        str(data["command"]),
        loads=", ".join(f"{x:.2f}" for x in loads),
        method=[
            f"{n} run(s) of every part ({parts}), in turn; each figure is the median of the "
            "runs with their range (min–max), each ratio likewise, computed within each run: "
            "procorch ÷ peer, except a speed-up (the peer's time ÷ procorch's, or procorch's "
            "rate ÷ the peer's: above 1 is better for procorch). A target is met only if it "
            f"holds in every run. JSON: `bench/results/{area.name}.json`. The parts' detailed "
            "sections (below, from the last run) say how each figure is measured.",
        ],
    )
    body = ["### Targets", ""]
    for t in data["targets"]:  # type: ignore[attr-defined]
        body.append(f"- target {t['target']}: **{t['verdict']}** ({_target_value(t, data)})")
    if not data["targets"]:
        body.append("- (none for this area)")
    body += ["", "### Ratios", "", "| ratio | median (range) |", "|---|---|"]
    for name, s in data["ratios"].items():  # type: ignore[attr-defined]
        body.append(report.table_row([name, ratio_with_range(s)]))
    if not data["ratios"]:
        body.append("| (none in this area) | |")
    body += ["", "### Figures", "", "| figure | median (range) |", "|---|---|"]
    for name, s in data["figures"].items():  # type: ignore[attr-defined]
        body.append(report.table_row([name, with_range(s, s["unit"])]))
    body.append("")
    notes = [f"- {text}" for text in data["notes"]]  # type: ignore[attr-defined]
    title = f"{area.title}: summary over {n} run(s)"
    return report.section(area.name, title, head, body, notes)


def launch(area_module: str, file: str) -> None:
    """An area's __main__: bench/ on the path (this file runs by path), then the area."""
    sys.exit(main_of(area_module)(sys.argv[1:], file))


def main_of(area_module: str) -> Callable[[list[str], str], int]:
    import importlib

    area: Area = importlib.import_module(area_module).AREA

    def go(argv: list[str], file: str) -> int:
        return main(area, argv, str(Path(file).resolve().parent))

    return go
