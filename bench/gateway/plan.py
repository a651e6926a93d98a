"""What a run of bench/gateway/runner.py measures (its plan) and what it found (its results):
shared by the runner (gateway.py) and the report (gwreport.py), which import nothing of
each other's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # needs the venv's packages: imported after the re-exec
    from gateway.wrk import WrkResult


@dataclass(frozen=True)
class Plan:
    seconds: int  # wrk's measured run per endpoint
    warmup: int  # an unmeasured wrk run before it (0: none)


FULL = Plan(seconds=5, warmup=1)
QUICK = Plan(seconds=2, warmup=0)


@dataclass
class Results:
    runs: dict[str, dict[str, list[WrkResult]]] = field(default_factory=dict)  # peer, endpoint
    labels: dict[str, str] = field(default_factory=dict)  # endpoint key -> label, in order
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # 1-minute load average, start and end

    def add(self, peer: str, endpoint: str, got: WrkResult) -> None:
        self.runs.setdefault(peer, {}).setdefault(endpoint, []).append(got)

    def get(self, peer: str, endpoint: str) -> WrkResult | None:
        """The figure: one run, or the runs pooled (the hello's two)."""
        from gateway import wrk as gwwrk

        runs = self.runs.get(peer, {}).get(endpoint)
        return gwwrk.pooled(runs) if runs else None
