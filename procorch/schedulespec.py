"""What a `[jobs.schedules]` entry may say: its name, cron expression and time zone.

The checks alone, below the config (which runs them when it loads a file) and the
schedules (jobs/schedule.py, which fires them); imports nothing of procorch. croniter
and zoneinfo are imported only when an entry names a cron expression or a zone.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # fits in a key, with the tick, and reads well


class ScheduleError(ValueError):
    """A schedule that cannot be: str() says why, in a few words."""


def check_cron(expression: str) -> str:
    """A standard five-field cron expression (or an @alias such as @daily), as given."""
    from croniter import croniter

    fields = expression.split() if isinstance(expression, str) else []
    aliased = len(fields) == 1 and fields[0].startswith("@")
    if not (len(fields) == 5 or aliased) or not croniter.is_valid(expression):
        raise ScheduleError(
            f"expected a cron expression like '0 3 * * *' (minute hour day month weekday), "
            f"got {expression!r}"
        )
    return expression


def check_timezone(name: str) -> str:
    """An IANA time zone name, as given."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(
            f"unknown time zone {name!r} (an IANA name like 'Europe/Paris')"
        ) from None
    return name
