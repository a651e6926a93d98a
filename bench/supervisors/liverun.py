"""The live-operations benchmark's runs: every part, every peer, taking turns.

Each run of one peer in one part is a session: a fresh working directory and marker, the
part's measurement (`livereload.measure` or `liveroll.measure`), then the peer's stop
command; whatever is left is killed. A peer whose session fails is skipped for the rest of
that part, with the reason kept for the report. Imported after bench/supervisors/live.py has re-run
itself in bench/.venv (psutil).
"""

from __future__ import annotations

from pathlib import Path

from harness.procs import free_port

from supervisors import livereload, liveroll
from supervisors.httpload import KINDS
from supervisors.metrics import Results, log
from supervisors.peers import ALL_PEERS, VARIANTS, Peer, PeerError

BY_NAME = {p.name: p for p in (*ALL_PEERS, *VARIANTS)}


class Runner:
    """Runs each part for its peers, `runs` times, the peers taking turns in each run."""

    def __init__(self, runs: int, root: Path, run_id: str) -> None:
        self.runs = runs
        self.root = root
        self.run_id = run_id
        self.results: dict[str, Results] = {}

    def run(self, part_peers: dict[str, list[str]]) -> dict[str, Results]:
        """`part_peers`: part ("reload", "rolling") -> the names of its peers, in order."""
        for part, names in part_peers.items():
            results = self.results[part] = Results()
            for rep in range(self.runs):
                for name in names:
                    if name not in results.skipped:
                        self.session(part, BY_NAME[name], rep)
        return self.results

    def session(self, part: str, peer_cls: type[Peer], rep: int) -> None:
        tag = f"{part}-{peer_cls.name}-r{rep}"
        peer = peer_cls(self.root / tag, f"{self.run_id}-{tag}")
        try:
            if part == "reload":
                self._reload(peer)
            else:
                self._rolling(peer)
            peer.stop()
        except PeerError as exc:
            self.results[part].skipped[peer.name] = str(exc)
            log(f"[{peer.name}] {part} skipped: {exc}")
        finally:
            peer.cleanup()

    def _reload(self, peer: Peer) -> None:
        got = livereload.measure(peer)
        for metric in ("live", "done", "returned", "restarted"):
            self.results["reload"].add(metric, peer.name, getattr(got, metric))
        log(
            f"[{peer.name}] reload: live {got.live * 1000:.0f} ms, done "
            f"{got.done * 1000:.0f} ms, {got.restarted} untouched restarted"
        )

    def _rolling(self, peer: Peer) -> None:
        got = liveroll.measure(peer, free_port())
        results = self.results["rolling"]
        for kind in KINDS:
            results.add(kind, peer.name, got.failures.get(kind, 0))
        figures = (
            "non_2xx",
            "served",
            "total",
            "longest_gap",
            "gap_before",
            "returned",
            "replaced",
        )
        for metric in figures:
            results.add(metric, peer.name, getattr(got, metric))
        log(
            f"[{peer.name}] rolling: {got.failures or 'no failures'}, {got.non_2xx} "
            f"non-2xx, {got.served} served during {got.returned * 1000:.0f} ms"
        )
