"""What a run of bench/jobs/runner.py measures (its plan) and what it found (its results):
shared by the runner (jobs.py) and the report (jobreport.py), which import nothing of
each other's."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Plan:
    jobs: int  # jobs in one throughput round
    pools: tuple[int, ...]  # worker counts
    rounds: int  # throughput rounds per pool, when cheap
    slow_round: float  # seconds; a peer whose first round took longer does only one
    enqueue_single: int  # jobs submitted one call each, per repetition
    enqueue_batch: int  # jobs in the one batched call, per repetition
    enqueue_reps: int
    latency_samples: int
    latency_warmup: int
    latency_pause: float  # seconds between single jobs, so the pool is idle again
    warmup_jobs: int  # a batch run before the timed rounds of each pool


FULL = Plan(
    jobs=5000,
    pools=(1, 2),
    rounds=3,
    slow_round=15.0,
    enqueue_single=2000,
    enqueue_batch=5000,
    enqueue_reps=3,
    latency_samples=200,
    latency_warmup=20,
    latency_pause=0.02,
    warmup_jobs=200,
)
QUICK = Plan(
    jobs=500,
    pools=(1, 2),
    rounds=1,
    slow_round=0.0,
    enqueue_single=500,
    enqueue_batch=500,
    enqueue_reps=1,
    latency_samples=50,
    latency_warmup=5,
    latency_pause=0.02,
    warmup_jobs=20,
)


@dataclass(frozen=True)
class Workload:
    """What every peer's jobs compute, and where its figures go."""

    name: str  # "fib" or "noop": the peers' job function
    section: str  # RESULTS.md's section for it
    command: str  # the script that measures it


FIB = Workload("fib", "jobs-fib", "python bench/jobs --parts fib")
NOOP = Workload("noop", "jobs-noop", "python bench/jobs --parts noop")


@dataclass
class Results:
    """Samples per metric and peer: rates in jobs/s, latencies in seconds."""

    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # 1-minute load average, start and end

    def add(self, metric: str, peer: str, value: float) -> None:
        self.samples.setdefault(metric, {}).setdefault(peer, []).append(value)

    def get(self, metric: str, peer: str) -> list[float]:
        return self.samples.get(metric, {}).get(peer, [])

    def note(self, peer: str, text: str) -> None:
        self.notes.setdefault(peer, []).append(text)


def throughput_metric(workers: int) -> str:
    return f"throughput_{workers}"
