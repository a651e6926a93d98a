"""Schedules: when a `[jobs.schedules]` entry fires, and what to do about missed ticks.

Pure: no clock, no store, no threads (scheduler.py has those). A tick is a whole Unix
time; it is named `schedule:NAME:EPOCH`, the idempotency key its job is submitted
under, so a tick submitted twice (by a restarted daemon, or by two daemons sharing a
Redis queue) is one job.

`every` ticks are the multiples of the interval since the Unix epoch, not counted from
a daemon's start: every daemon agrees on them (`every = "1h"` fires on the hour, UTC).
`cron` ticks are croniter's, in the schedule's time zone (UTC by default).

Missed ticks (none ran: no daemon, or the store was down): at the next chance, the
latest missed tick fires once, late, and the others are only counted; a latest tick
older than CATCH_UP is counted too instead of run. CATCH_UP is half the store's key
retention, so a tick another daemon submitted on time is still remembered under its
key when this one catches up: no tick runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from procorch.schedulespec import NAME, ScheduleError, check_cron, check_timezone
from procorch.services.protocol import KEY_RETENTION

CATCH_UP = KEY_RETENTION // 2  # seconds: a missed tick older than this is only counted
MAX_COUNTED = 100_000  # missed cron ticks counted one by one at most ("at least N")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Schedule:
    """One `[jobs.schedules]` entry: a job to submit at each tick."""

    name: str
    function: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()  # a dict's items: the dataclass stays hashable
    cron: str | None = None
    every: int | None = None  # seconds
    timezone: str = "UTC"

    @classmethod
    def of(cls, name: str, table: dict[str, Any]) -> Schedule:
        """The schedule a validated config table describes (`JobsSettings.schedules[name]`)."""
        return cls(
            name=name,
            function=table["function"],
            args=tuple(table.get("args", ())),
            kwargs=tuple(table.get("kwargs", {}).items()),
            cron=table.get("cron"),
            every=table.get("every"),
            timezone=table.get("timezone", "UTC"),
        )

    @property
    def spec(self) -> str:
        """How it fires, for people: 'every 30s' or 'cron 0 3 * * *'."""
        if self.every is not None:
            return f"every {_duration(self.every)}"
        zone = "" if self.timezone == "UTC" else f" ({self.timezone})"
        return f"cron {self.cron}{zone}"

    def next_after(self, t: float) -> int:
        """The first tick strictly after time `t`."""
        if self.every is not None:
            return (int(t // self.every) + 1) * self.every
        return int(self._cron_from(t).get_next(float))

    def latest_at(self, t: float) -> int | None:
        """The last tick at or before time `t` (None: no tick ever, as for a cron
        expression that matches no date)."""
        if self.every is not None:
            return int(t // self.every) * self.every
        try:
            return int(self._cron_from(int(t) + 1).get_prev(float))
        except Exception:  # croniter's search gives up: no such tick
            return None

    def ticks(self, after: float, until: float, limit: int = 1000) -> list[int]:
        """The ticks in (after, until], the first `limit` of them."""
        found: list[int] = []
        tick = self.next_after(after)
        while tick <= until and len(found) < limit:
            found.append(tick)
            tick = self.next_after(tick)
        return found

    def count(self, after: float, until: float) -> int:
        """How many ticks fall in (after, until]; at most MAX_COUNTED for cron."""
        if until <= after:
            return 0
        if self.every is not None:
            return int(until // self.every) - int(after // self.every)
        return len(self.ticks(after, until, MAX_COUNTED))

    def key(self, tick: int) -> str:
        """The tick's identity: the idempotency key its job is submitted under."""
        return f"schedule:{self.name}:{tick}"

    def _cron_from(self, t: float) -> Any:
        import datetime
        from zoneinfo import ZoneInfo

        from croniter import croniter

        start = datetime.datetime.fromtimestamp(t, ZoneInfo(self.timezone))
        return croniter(self.cron, start)


@dataclass(frozen=True)
class Plan:
    """What to do now about one schedule: the tick to submit (if any), how many ticks
    went by unrun, and up to when every tick is then accounted for."""

    fire: int | None
    missed: int
    done_until: float


def plan(schedule: Schedule, done_until: float, now: float, catch_up: float = CATCH_UP) -> Plan:
    """The decision at `now`, every tick up to `done_until` having been fired or counted.

    The latest due tick fires (unless older than `catch_up`); earlier due ones are missed.
    """
    latest = schedule.latest_at(now)
    if latest is None or latest <= done_until:
        return Plan(None, 0, done_until)
    due = schedule.count(done_until, latest)
    if now - latest > catch_up:
        return Plan(None, due, latest)
    return Plan(latest, due - 1, latest)


def _duration(seconds: int) -> str:
    for unit in "dhm":
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


__all__ = [  # the entry's checks live below the config; here for the schedules' users
    "CATCH_UP",
    "NAME",
    "Plan",
    "Schedule",
    "ScheduleError",
    "check_cron",
    "check_timezone",
    "plan",
]
