"""The command line and the idle daemon, as the issue's targets ask: `status` (table and
`--json`) vs `supervisorctl status` and `circusctl status`, idle CPU with health checks on,
and `down` until no child is left, each at the service counts the targets name.

1. status, N = 4 and 50 programs: the three daemons run at the same time, each with N
   programs (one sleeper each), so the commands can be interleaved like hyperfine's runs
   would be if it alternated: round after round of supervisorctl, circusctl, procorch
   status, procorch status --json, in an order that rotates every round, so drift of the
   machine hits every command alike. Each command is a whole process (start-up included),
   timed from just before it is spawned until it exits. "Cold": the first call of each
   command after its daemon started (2 s after all children were alive; the files are in
   the page cache, which cannot be dropped here: cold means the daemon's first answer and
   the command's first start in this session). "Warm": one untimed call of each, then the
   median of `status_runs` interleaved rounds.
2. idle CPU, N = 50 and 200 programs, one daemon at a time: each program a sleeper that
   listens on its own loopback port. procorch runs at its default health checks (every
   process sampled every `check_interval`, 5 s: alive, not a zombie, CPU, memory), and
   again as "procorch+tcp" with a `[services.sNNN.health] tcp = PORT` probe of every
   service at that interval, which no peer does; supervisord and circus have no health
   checks and supervise at their defaults. After startup and 2 s more, the daemon's (and its helper
   processes') user + system CPU seconds over a window of `idle_seconds`.
3. down, same sessions: the clock starts just before the stop command is spawned
   (`procorch down`, `supervisorctl shutdown`, `circusctl quit`) and stops when no child of
   the session is left (/proc polled every 5 ms).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from harness.area import Figure, RunOutput, log
from harness.report import header, section, table_row

STATUS_NS = (4, 50)
IDLE_NS = (50, 200)
SETTLE = 2.0  # s after all children are alive (past every peer's 1 s start time)
PEERS = ("supervisord", "circus", "procorch")


@dataclass(frozen=True)
class Plan:
    status_ns: tuple[int, ...]
    status_runs: int
    idle_ns: tuple[int, ...]
    idle_seconds: float


FULL = Plan(status_ns=STATUS_NS, status_runs=30, idle_ns=IDLE_NS, idle_seconds=20.0)
QUICK = Plan(status_ns=STATUS_NS, status_runs=5, idle_ns=(50,), idle_seconds=5.0)


def _commands(peer: object) -> dict[str, list[str]]:
    cmd = peer.status_cmd()  # type: ignore[attr-defined]
    if peer.name == "procorch":  # type: ignore[attr-defined]
        return {"procorch status": cmd, "procorch status --json": [*cmd[:2], "--json", *cmd[2:]]}
    return {f"{peer.name} status": cmd}  # type: ignore[attr-defined]


def _timed(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    return time.perf_counter() - t0, done.returncode


# The programs' ports: below Linux's ephemeral range (32768 on), where the daemon's own
# outgoing connections (a probe's source port) can never take one a program has yet to bind.
FIRST_PORT = 20000


def _ports(count: int) -> list[int]:
    ports, port = [], FIRST_PORT
    while len(ports) < count:
        port += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def _stack(peer: object, n: int, listen: bool, probes: bool = False) -> list[object]:
    """N sleepers, each on a port of its own if `listen`; with a tcp probe of it if
    `probes` (procorch only)."""
    from supervisors.programs import Program

    programs = []
    ports = _ports(n) if listen else [None] * n
    for i, port in enumerate(ports):
        argv = tuple(peer.sleeper_argv())  # type: ignore[attr-defined]
        if port is not None:
            argv += ("--port", str(port))
        programs.append(Program(f"s{i:03d}", argv, health_tcp=port if probes else None))
    return programs


def measure_status(peer_classes: list, plan: Plan, root: Path, run_id: str, rotate: int) -> dict:
    """{N: {command: {"cold": s, "warm": [s, ...]}}} with all peers up at once."""
    from supervisors.peers import PeerError

    found: dict[int, dict[str, dict]] = {}
    for n in plan.status_ns:
        peers = []
        try:
            for cls in peer_classes:
                peer = cls(root / f"status-{cls.name}-n{n}", f"{run_id}-status-{cls.name}-n{n}")
                peers.append(peer)
                peer.write_stack(_stack(peer, n, listen=False))
                peer.launch(n)
            time.sleep(SETTLE)
            commands: dict[str, list[str]] = {}
            for peer in peers:
                commands.update(_commands(peer))
            names = list(commands)
            k = rotate % len(names)
            order = names[k:] + names[:k]
            got = {name: {"cold": None, "warm": [], "failed": 0} for name in names}
            for name in order:  # cold: the first call after the daemon started
                elapsed, code = _timed(commands[name])
                got[name]["cold"] = elapsed
                got[name]["failed"] += code != 0
            for name in order:  # warm-up, untimed
                _timed(commands[name])
            for rnd in range(plan.status_runs):
                k = rnd % len(names)
                for name in names[k:] + names[:k]:
                    elapsed, code = _timed(commands[name])
                    got[name]["warm"].append(elapsed)
                    got[name]["failed"] += code != 0
            for name, g in got.items():
                log(
                    f"[cli] N={n} {name}: cold {g['cold'] * 1000:.0f} ms, "
                    f"warm median {median(g['warm']) * 1000:.0f} ms"
                )
            found[n] = got
        except PeerError as exc:
            log(f"[cli] status N={n}: {exc}")
        finally:
            for peer in peers:
                try:
                    peer.stop()
                except PeerError:
                    pass
                peer.cleanup()
    return found


def measure_idle_down(peer_classes: list, plan: Plan, root: Path, run_id: str, rotate: int) -> dict:
    """{N: {peer: {"cpu": s, "down": s, "helpers": k}}}, one daemon at a time."""
    from harness import procs

    from supervisors.peers import PeerError

    found: dict[int, dict[str, dict]] = {}
    for n in plan.idle_ns:
        sessions = [(cls, cls.name, False) for cls in peer_classes]
        probed = [cls for cls in peer_classes if cls.name == "procorch"]
        sessions += [(cls, f"{cls.name}+tcp", True) for cls in probed]
        k = rotate % len(sessions)
        for cls, name, probes in sessions[k:] + sessions[:k]:
            tag = f"idle-{name.replace('+', '-')}-n{n}"
            peer = cls(root / tag, f"{run_id}-{tag}")
            try:
                peer.write_stack(_stack(peer, n, listen=True, probes=probes))
                peer.launch(n, timeout=120)
                time.sleep(SETTLE)
                pid = peer.daemon_pid()
                if pid is None:
                    raise PeerError("daemon pid not found")
                tree = procs.daemon_tree(pid, exclude=peer.alive())
                before = procs.cpu_snapshot(tree)
                time.sleep(plan.idle_seconds)
                cpu = procs.cpu_seconds_between(before, procs.cpu_snapshot(tree))
                stopped = peer.stop(timeout=600)  # supervisord stops ~2 programs a second
                found.setdefault(n, {})[name] = {
                    "cpu": cpu,
                    "down": stopped.children_gone,
                    "helpers": len(tree) - 1,
                }
                log(
                    f"[cli] N={n} {name}: idle cpu {cpu:.3f} s / {plan.idle_seconds:.0f} s, "
                    f"down {stopped.children_gone * 1000:.0f} ms"
                )
            except PeerError as exc:
                log(f"[cli] {name} N={n}: {exc}")
            finally:
                peer.cleanup()
    return found


RUNS_DONE = [0]  # the run's index, to rotate the orders from run to run


def run(args: argparse.Namespace) -> RunOutput:
    from harness import args as benchargs
    from harness import procs

    from supervisors.peers import ALL_PEERS

    wanted = benchargs.wanted_peers(args, PEERS)
    peer_classes = [p for p in ALL_PEERS if p.name in wanted]
    plan = QUICK if args.quick else FULL
    run_id = f"pccli-{uuid.uuid4().hex[:10]}"
    root = Path(tempfile.mkdtemp(prefix=f"{run_id}-"))
    rotate = RUNS_DONE[0]
    RUNS_DONE[0] += 1
    try:
        status = measure_status(peer_classes, plan, root, run_id, rotate)
        idle = measure_idle_down(peer_classes, plan, root, run_id, rotate)
    finally:
        procs.kill(procs.pids_mentioning(run_id))
        if args.keep_tmp:
            log(f"[cli] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return output(status, idle, plan, args)


def output(status: dict, idle: dict, plan: Plan, args: argparse.Namespace) -> RunOutput:
    out = RunOutput()
    for n, got in status.items():
        for name, g in got.items():
            out.figures[f"{name}, N={n}, cold"] = Figure(g["cold"], "ms")
            out.figures[f"{name}, N={n}, warm"] = Figure(median(g["warm"]), "ms")
            if g["failed"]:
                out.notes.append(f"{name} at N={n} exited non-zero {g['failed']} times")
        for when in ("cold", "warm"):
            for ours in ("procorch status", "procorch status --json"):
                for peer in ("supervisord", "circus"):
                    a = out.figures.get(f"{ours}, N={n}, {when}")
                    b = out.figures.get(f"{peer} status, N={n}, {when}")
                    if a and b and b.value:
                        ctl = "supervisorctl" if peer == "supervisord" else "circusctl"
                        out.ratios[f"{ours} ÷ {ctl} status, N={n}, {when}"] = a.value / b.value
    for n, got in idle.items():
        for peer, g in got.items():
            out.figures[f"idle CPU {peer}, N={n}, {plan.idle_seconds:.0f} s"] = Figure(
                g["cpu"], "s"
            )
            out.figures[f"down {peer}, N={n}"] = Figure(g["down"], "ms")
            if g["helpers"]:
                out.notes.append(
                    f"{peer} N={n}: idle CPU includes {g['helpers']} helper process(es)"
                )
        for mine in ("procorch", "procorch+tcp"):
            ours = got.get(mine)
            for peer in ("supervisord", "circus"):
                theirs = got.get(peer)
                if ours and theirs:
                    if theirs["cpu"] > 0:
                        out.ratios[f"idle CPU {mine} ÷ {peer}, N={n}"] = ours["cpu"] / theirs["cpu"]
                    if theirs["down"] > 0 and mine == "procorch":
                        out.ratios[f"down procorch ÷ {peer}, N={n}"] = ours["down"] / theirs["down"]
    out.sections["supervisors-cli"] = render(out, plan, args)
    return out


def render(out: RunOutput, plan: Plan, args: argparse.Namespace) -> str:
    head = header(
        "python bench/supervisors --parts cli" + (" --quick" if args.quick else ""),
        method=[
            f"status: N = {', '.join(map(str, plan.status_ns))} programs, all three daemons "
            f"up at once, commands interleaved in rotating order; cold = first call after "
            f"the daemon started, warm = median of {plan.status_runs} after one warm-up call",
            f"idle CPU and down: N = {', '.join(map(str, plan.idle_ns))} listening programs, "
            f"one daemon at a time; procorch at its default health checks (every process "
            f"sampled every 5 s), and again (procorch+tcp) with a TCP probe of each service; "
            f"{plan.idle_seconds:.0f} s window; down timed from before the stop command is "
            "spawned until no child is left. Method: bench/supervisors/cli.py's docstring.",
        ],
    )
    body = ["| figure | value |", "|---|---|"]
    body += [
        table_row([k, f"{f.value * 1000:.1f} ms" if f.unit == "ms" else f"{f.value:.3f} s"])
        for k, f in out.figures.items()
    ]
    body += ["", "| ratio (procorch ÷ peer) | value |", "|---|---|"]
    body += [table_row([k, f"{x:.2f}×"]) for k, x in out.ratios.items()]
    body.append("")
    notes = [f"- {n}" for n in out.notes]
    return section(
        "supervisors-cli", "The command line and the idle daemon (one run)", head, body, notes
    )
