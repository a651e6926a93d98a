"""Benchmark procorch's service calls against three other ways of doing request/reply.

    python bench/services            # 3 runs
    python bench/services --quick    # smoke run: 1 round, fewer calls, 1 s windows

A caller process sends `{"user_id": 42, "product": "Laptop"}` to a server process, which
echoes it back, through each peer in `services/peers.py`: a raw Unix-socket ping-pong (the
floor), the same carrying minimal length-prefixed JSON (a reference: the least a JSON
protocol costs), `multiprocessing.Queue` request/reply, a `multiprocessing.Manager` queue and dict
(the original's approach), and procorch (a real `procorch up` stack running
`benchsvc:Echo`, called with the procorch client). For each peer it measures:

1. round trip p50 and p99: one caller, 5,000 sequential calls after a warm-up, with the
   caller and the server pinned to one core, then to two (see `placements`);
2. throughput: calls completed in a 1.5 s window by 1 caller (in both placements) and by
   4 concurrent caller processes (unpinned).

Peers take turns within each of 3 rounds, each with a fresh server, and every figure is
the median over the rounds. The script creates bench/.venv on first use (procorch
installed as a user installs it) and re-runs itself with that venv's python. Everything
it starts is stopped at the end, on error and on Ctrl-C too. procorch is skipped with a
note while its services client is not in the checkout.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from statistics import median
from typing import Any

from harness import args as benchargs
from harness import stats
from harness import venv as benchvenv
from harness.area import Figure, RunOutput, log

from services import peers as rpcpeers

MAX_CALLERS = rpcpeers.MAX_CALLERS  # the concurrent callers of the last throughput
START_DELAY_NS = 50_000_000  # the throughput window opens this long after all are ready
CALLER_TIMEOUT = 180.0  # s for one caller job (the Manager's 5,000 calls take ~7 s)


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup: int  # calls before any timing, per caller process
    calls: int  # sequential calls timed for the round trip
    seconds: float  # throughput window


FULL = Plan(rounds=3, warmup=500, calls=5000, seconds=1.5)
QUICK = Plan(rounds=1, warmup=200, calls=1000, seconds=1.0)


@dataclass
class Results:
    # figures[peer][metric]: one value per round. Metrics, for each placement WHERE
    # ("same", "split"): p50_WHERE, p99_WHERE (ns), tput1_WHERE (calls/s), sleeps_WHERE
    # (the Manager's polls that slept, per call); and tput4 (calls/s, unpinned).
    figures: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    skipped: dict[str, str] = field(default_factory=dict)
    load_at_start: tuple[float, ...] = field(default_factory=os.getloadavg)

    def value(self, peer: str, metric: str) -> float | None:
        values = self.figures.get(peer, {}).get(metric)
        return median(values) if values else None


def percentile(sorted_samples: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0-1) of already sorted samples."""
    return int(stats.nearest_rank(sorted_samples, q * 100))


# -- running caller processes ------------------------------------------------------------


def _receive(conn: Any, proc: Any, timeout: float) -> tuple[str, Any]:
    """The next message from a caller, or an error if it dies or takes too long."""
    if conn.poll(0) or wait([conn, proc.sentinel], timeout):
        if conn.poll(0):
            kind, value = conn.recv()
            if kind == "error":
                raise RuntimeError(f"caller failed: {value}")
            return kind, value
        raise RuntimeError(f"caller exited with code {proc.exitcode} without an answer")
    raise RuntimeError(f"caller gave no answer within {timeout:.0f} s")


def run_callers(peer: Any, n: int, job: dict[str, Any], seconds: float = 0.0) -> list[Any]:
    """Start `n` caller processes on `peer` with `job`; return what each sends back."""
    procs, conns = [], []
    try:
        for i in range(n):
            here, there = rpcpeers.CTX.Pipe()
            proc = rpcpeers.CTX.Process(
                target=rpcpeers.caller_main,
                args=(peer.name, peer.endpoint(), i, job, there),
                name=f"caller-{i}",
                daemon=True,
            )
            proc.start()
            there.close()
            procs.append(proc)
            conns.append(here)
        if job["kind"] == "throughput":
            for conn, proc in zip(conns, procs, strict=True):
                _receive(conn, proc, CALLER_TIMEOUT)  # "ready": warmed up
            start = time.perf_counter_ns() + START_DELAY_NS
            window = (start, start + int(seconds * 1e9))
            for conn in conns:
                conn.send(window)
        answers = [_receive(c, p, CALLER_TIMEOUT)[1] for c, p in zip(conns, procs, strict=True)]
        for proc in procs:
            proc.join(10)
        return answers
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        for conn in conns:
            conn.close()


def placements() -> dict[str, tuple[set[int], set[int]]]:
    """Where the caller and the server side run for the round trip: (caller, server) CPUs.

    Pinned, because on this VM a wake-up across cores costs ~40 µs, ten times a same-core
    Unix-socket round trip, and left alone the scheduler puts a pair on one core or on
    two by luck of the launch. Both placements are measured, every peer alike.
    """
    cpus = sorted(os.sched_getaffinity(0))
    found = {"same": ({cpus[0]}, {cpus[0]})}
    if len(cpus) > 1:
        found["split"] = ({cpus[0]}, {cpus[1]})
    return found


def measure(peer: Any, plan: Plan, results: Results) -> None:
    """One round of one peer: start a fresh server, time the calls, stop everything.

    In each placement: the round trips of one caller, then one caller's throughput.
    Then, unpinned, the throughput of 4 callers (they keep both cores busy anyway).
    """
    figures = results.figures[peer.name]
    everywhere = os.sched_getaffinity(0)
    try:
        peer.start()
        for where, (caller_cpus, server_cpus) in placements().items():
            for pid in peer.server_pids():
                rpcpeers.pin(pid, server_cpus)
            job = {"kind": "latency", "warmup": plan.warmup, "calls": plan.calls}
            samples, sleeps = run_callers(peer, 1, {**job, "cpus": caller_cpus})[0]
            samples.sort()
            figures[f"sleeps_{where}"].append(sleeps)
            figures[f"p50_{where}"].append(percentile(samples, 0.50))
            figures[f"p99_{where}"].append(percentile(samples, 0.99))
            job = {"kind": "throughput", "warmup": plan.warmup, "cpus": caller_cpus}
            counts = run_callers(peer, 1, job, plan.seconds)
            figures[f"tput1_{where}"].append(sum(counts) / plan.seconds)
        for pid in peer.server_pids():
            rpcpeers.pin(pid, everywhere)
        job = {"kind": "throughput", "warmup": plan.warmup}
        counts = run_callers(peer, MAX_CALLERS, job, plan.seconds)
        figures["tput4"].append(sum(counts) / plan.seconds)
        log(
            f"[bench]   {peer.name}: "
            + ", ".join(
                f"{where}: p50 {figures[f'p50_{where}'][-1] / 1000:.1f} µs, "
                f"p99 {figures[f'p99_{where}'][-1] / 1000:.1f} µs, "
                f"1 caller {figures[f'tput1_{where}'][-1]:,.0f}/s"
                for where in placements()
            )
            + f"; 4 callers {figures['tput4'][-1]:,.0f}/s"
        )
    finally:
        peer.stop()


def run_plan(peer_classes: list[Any], plan: Plan) -> Results:
    results = Results()
    peers = []
    for cls in peer_classes:
        peer = cls()
        why = peer.available()
        if why:
            results.skipped[peer.name] = why
            log(f"[bench] {peer.name} skipped: {why}")
        else:
            peers.append(peer)
    for r in range(plan.rounds):
        log(f"[bench] round {r + 1} of {plan.rounds}")
        for peer in list(peers):
            try:
                measure(peer, plan, results)
            except Exception as exc:  # one broken peer does not stop the others
                results.skipped[peer.name] = f"failed in round {r + 1}: {exc}"
                results.figures.pop(peer.name, None)
                peers.remove(peer)
                log(f"[bench] {peer.name} failed: {exc}")
    return results


# -- the part ---------------------------------------------------------------------------

UNITS = {"p50": "µs", "p99": "µs", "tput1": "calls/s", "tput4": "calls/s"}


def run(args: argparse.Namespace) -> RunOutput:
    from services import report as svcreport

    keys = {"raw": rpcpeers.Raw, "json": rpcpeers.Json, "queue": rpcpeers.Queue}
    keys |= {"manager": rpcpeers.Manager, "procorch": rpcpeers.Procorch}
    wanted = benchargs.wanted_peers(args, list(keys))
    classes = [cls for key, cls in keys.items() if key in wanted]
    rpcpeers.Procorch.cli = str(benchvenv.BIN_DIR / "procorch")
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    results = run_plan(classes, plan)
    log(f"[bench] done in {time.monotonic() - started:.0f} s")
    command = "python bench/services" + (" --quick" if args.quick else "")
    section = svcreport.render(results, plan, [cls.name for cls in classes], command)
    out = RunOutput(sections={svcreport.SECTION: section})
    ours = rpcpeers.Procorch.name
    for peer, metrics in results.figures.items():
        for metric in metrics:
            unit = UNITS.get(metric.split("_")[0])
            value = results.value(peer, metric)
            if unit and value is not None:
                out.figures[f"{metric} {peer}"] = Figure(value, unit, unit == "calls/s")
    for peer in results.figures:
        if peer == ours:
            continue
        for metric in results.figures[peer]:
            a, b = results.value(ours, metric), results.value(peer, metric)
            if metric.startswith("p50") and a and b:
                out.ratios[f"{metric} procorch ÷ {peer}"] = a / b
    out.notes += [f"{peer} skipped: {why}" for peer, why in results.skipped.items()]
    return out
