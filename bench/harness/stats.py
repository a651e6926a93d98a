"""Median, range and percentiles of samples, and the summary of one figure over runs.
Standard library only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median, quantiles


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the two nearest ranks ("inclusive")."""
    if not samples:
        raise ValueError("no samples")
    if len(samples) == 1:
        return samples[0]
    if q <= 0:
        return min(samples)
    if q >= 100:
        return max(samples)
    cuts = quantiles(samples, n=1000, method="inclusive")
    return cuts[min(len(cuts) - 1, max(0, round(q * 10) - 1))]


def nearest_rank(sorted_samples: Sequence[float], q: float) -> float:
    """The q-th percentile by nearest rank, of samples already sorted."""
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return sorted_samples[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """{median, min, max, n} of the values (one per run)."""
    return {"median": median(values), "min": min(values), "max": max(values), "n": len(values)}
