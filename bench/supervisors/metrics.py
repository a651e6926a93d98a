"""The five measurements, and the plan that runs them for every peer side by side.

Each daemon run ("session") of one peer at one N measures its startup; the first session
at N = 4 then measures `status` latency and crash-to-replacement, the first at N = 50
measures the idle footprint, and every N = 50 session measures shutdown. Peers take turns
within each repetition, so slow drift of the machine hits them all alike.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from harness import procs
from harness.area import log

from supervisors.peers import Peer, PeerError

SMALL_N = 4  # status latency and crash-to-replacement run at this N
IDLE_N = 50  # idle footprint and shutdown run at this N
SETTLE = 2.0  # s after startup before steady-state measurements (past 1 s "start seconds")
MIN_VICTIM_AGE = 2.5  # s a child must have run before it is killed (see measure_crash)
KILL_GAP = (0.2, 1.5)  # s, random pause before each kill
REPLACE_TIMEOUT = 12.0  # s to wait for a replacement (circus checks every 5 s)
POLL_CRASH = 0.001  # s between process scans while waiting for a replacement


@dataclass(frozen=True)
class Plan:
    startup_ns: tuple[int, ...]
    startup_reps: int
    kills: int
    status_runs: int
    idle_seconds: float


FULL = Plan(startup_ns=(4, 50, 200), startup_reps=3, kills=15, status_runs=20, idle_seconds=20)
QUICK = Plan(startup_ns=(4, 50), startup_reps=1, kills=6, status_runs=8, idle_seconds=10)


@dataclass
class Results:
    """Samples per metric and peer, plus what went wrong along the way."""

    samples: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, metric: str, peer: str, value: float) -> None:
        self.samples[metric][peer].append(value)

    def get(self, metric: str, peer: str) -> list[float]:
        return self.samples.get(metric, {}).get(peer, [])

    def note(self, peer: str, text: str) -> None:
        if text not in self.notes[peer]:
            self.notes[peer].append(text)
        log(f"[{peer}] note: {text}")


class Runner:
    """Runs a `Plan` over the peers, each session in its own fresh directory."""

    def __init__(self, peers: list[type[Peer]], plan: Plan, root: Path, run_id: str) -> None:
        self.peers = peers
        self.plan = plan
        self.root = root
        self.run_id = run_id
        self.results = Results()
        self.rng = random.Random()

    def run(self) -> Results:
        for n in self.plan.startup_ns:
            for rep in range(self.plan.startup_reps):
                for peer_cls in self.peers:
                    if peer_cls.name not in self.results.skipped:
                        self.session(peer_cls, n, rep)
        return self.results

    def session(self, peer_cls: type[Peer], n: int, rep: int) -> None:
        tag = f"{peer_cls.name}-n{n}-r{rep}"
        peer = peer_cls(self.root / tag, f"{self.run_id}-{tag}")
        try:
            self.measure_startup(peer, n)
        except PeerError as exc:
            self.results.skipped[peer.name] = str(exc)
            log(f"[{peer.name}] skipped: {exc}")
            peer.cleanup()
            return
        try:
            if rep == 0 and n == SMALL_N:
                time.sleep(SETTLE)
                self.measure_status(peer)
                self.measure_crash(peer, n)
            if rep == 0 and n == IDLE_N:
                time.sleep(SETTLE)
                self.measure_idle(peer)
            stopped = peer.stop()
            if n == IDLE_N:
                self.results.add("shutdown", peer.name, stopped.children_gone)
            log(f"[{peer.name}] N={n}: children gone {ms(stopped.children_gone)} after stop")
        except PeerError as exc:
            self.results.note(peer.name, str(exc))
        finally:
            peer.cleanup()

    # --- 1. startup ---------------------------------------------------------------------

    def measure_startup(self, peer: Peer, n: int) -> None:
        timing = peer.start(n)
        self.results.add(f"startup_{n}", peer.name, timing.all_alive)
        if peer.start_waits_for_ready:
            self.results.add(f"ready_{n}", peer.name, timing.command_returned)
        log(
            f"[{peer.name}] N={n}: all alive {ms(timing.all_alive)}, "
            f"start command returned {ms(timing.command_returned)}"
        )

    # --- 2. crash to replacement -------------------------------------------------------

    def measure_crash(self, peer: Peer, n: int) -> None:
        """SIGKILL a child, time until a new one is alive; repeat at random moments.

        The victim is the oldest child, and it must have run MIN_VICTIM_AGE: supervisord
        treats a death within its 1 s startsecs as a failed start, and procorch a death
        within a second of running as part of a crash loop; both back off then, which is
        not the crash path measured here.
        """
        failures = 0
        for _ in range(self.plan.kills):
            time.sleep(self.rng.uniform(*KILL_GAP))
            if not procs.wait_until(lambda: len(peer.alive()) >= n, REPLACE_TIMEOUT):
                raise PeerError(f"crash test: fewer than {n} children left; stopped early")
            before = peer.alive()
            victim = min(before, key=procs.create_time)
            age = time.time() - procs.create_time(victim)
            if age < MIN_VICTIM_AGE:
                time.sleep(MIN_VICTIM_AGE - age)
            elapsed = self._kill_and_wait(peer, victim, before)
            if elapsed is None:
                failures += 1
            else:
                self.results.add("crash", peer.name, elapsed)
        if failures:
            self.results.note(
                peer.name,
                f"crash test: {failures}/{self.plan.kills} kills not replaced "
                f"within {REPLACE_TIMEOUT:.0f} s",
            )
        got = self.results.get("crash", peer.name)
        if got:
            log(f"[{peer.name}] crash->replacement: median {ms(median(got))}, max {ms(max(got))}")

    @staticmethod
    def _kill_and_wait(peer: Peer, victim: int, before: set[int]) -> float | None:
        t0 = time.perf_counter()
        peer.kill_child(victim)
        while time.perf_counter() - t0 < REPLACE_TIMEOUT:
            if peer.alive() - before:
                return time.perf_counter() - t0
            time.sleep(POLL_CRASH)
        return None

    # --- 3. status latency -------------------------------------------------------------

    def measure_status(self, peer: Peer) -> None:
        """Wall time of the whole status command, after one untimed warm-up run."""
        cmd = peer.status_cmd()
        failed = 0
        subprocess.run(cmd, capture_output=True, timeout=30, check=False)
        for _ in range(self.plan.status_runs):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
            self.results.add("status", peer.name, time.perf_counter() - t0)
            failed += done.returncode != 0
        if failed:
            self.results.note(peer.name, f"status exited non-zero {failed} times")
        log(f"[{peer.name}] status: median {ms(median(self.results.get('status', peer.name)))}")

    # --- 4. idle footprint -------------------------------------------------------------

    def measure_idle(self, peer: Peer) -> None:
        """RSS at the end, and CPU seconds used, over an idle window with N children."""
        if not procs.wait_until(lambda: peer.daemon_pid() is not None, 10, 0.05):
            raise PeerError("idle test: daemon pid not found")
        pid = peer.daemon_pid()
        assert pid is not None
        tree = procs.daemon_tree(pid, exclude=peer.alive())
        if len(tree) > 1:
            self.results.note(peer.name, f"idle figures include {len(tree) - 1} helper process(es)")
        before = procs.cpu_snapshot(tree)
        time.sleep(self.plan.idle_seconds)
        cpu = procs.cpu_seconds_between(before, procs.cpu_snapshot(tree))
        rss = procs.rss_bytes(tree)
        self.results.add("rss", peer.name, rss / 2**20)
        self.results.add("cpu", peer.name, cpu)
        log(f"[{peer.name}] idle: rss {rss / 2**20:.1f} MiB, cpu {cpu:.3f} s")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
