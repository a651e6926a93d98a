"""Recent history for the dashboard's charts: a bounded series of samples per key.

A sample is taken each time the live view is refreshed (at most once a second, whoever
asks), so the charts show the last minutes without anything running while nobody looks.
Counters (requests served, jobs finished) become rates here; a counter that went down
(a replica restarted with fresh counters, finished jobs purged) counts as no change
rather than a negative rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

POINTS = 600  # the points a series keeps: ten minutes at one a second


@dataclass
class Series:
    """Times, and for each name its values at those times (gauges as they were sampled,
    counters as rates per second since the sample before)."""

    points: int = POINTS
    times: deque[float] = field(init=False)
    values: dict[str, deque[float | None]] = field(default_factory=dict)
    _last_counts: dict[str, float] = field(default_factory=dict)
    _last_time: float | None = None

    def __post_init__(self) -> None:
        self.times = deque(maxlen=self.points)

    def add(self, now: float, gauges: dict[str, float | None], counters: dict[str, float]) -> None:
        """One sample: `gauges` kept as they are, `counters` turned into rates."""
        elapsed = None if self._last_time is None else now - self._last_time
        if elapsed is not None and elapsed <= 0:
            return  # the clock did not move: nothing new to say
        self.times.append(round(now, 3))
        for name, value in gauges.items():
            self._column(name).append(value)
        for name, count in counters.items():
            before = self._last_counts.get(name)
            rate = None
            if before is not None and elapsed is not None:
                rate = round(max(0.0, count - before) / elapsed, 3)
            self._column(name).append(rate)
            self._last_counts[name] = count
        self._last_time = now

    def _column(self, name: str) -> deque[float | None]:
        column = self.values.get(name)
        if column is None:
            # a name seen for the first time now: earlier points have no value for it
            column = self.values[name] = deque([None] * (len(self.times) - 1), self.points)
        return column

    def public(self) -> dict[str, list[Any]]:
        """Every point: "t", the times, and a list of values per name."""
        data: dict[str, list[Any]] = {"t": list(self.times)}
        for name, column in self.values.items():
            data[name] = [None] * (len(self.times) - len(column)) + list(column)
        return data

    def newest(self) -> dict[str, list[Any]]:
        """The newest point only, in the same shape."""
        data: dict[str, list[Any]] = {"t": [self.times[-1]] if self.times else []}
        for name, column in self.values.items():
            data[name] = [column[-1]] if column else []
        return data


class Histories:
    """A `Series` per key (a service's name, "jobs"), made on first use; keys not
    sampled in a refresh (a service removed by a reload) are dropped."""

    def __init__(self, points: int = POINTS) -> None:
        self.points = points
        self._series: dict[str, Series] = {}

    def add(
        self, key: str, now: float, gauges: dict[str, float | None], counters: dict[str, float]
    ) -> Series:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Series(self.points)
        series.add(now, gauges, counters)
        return series

    def public(self, key: str) -> dict[str, list[Any]]:
        """`key`'s series whole (empty if it has none yet)."""
        series = self._series.get(key)
        return series.public() if series else {"t": []}

    def keep_only(self, keys: set[str]) -> None:
        for key in set(self._series) - keys:
            del self._series[key]
