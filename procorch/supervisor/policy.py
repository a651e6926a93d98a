"""The restart policy: what follows a supervised process's death, as pure functions.

Only a crash loop gives up on a service: a death while it was still starting, or
less than `STABLE_AFTER` seconds after it was running (supervisord's `startretries`
counts the same failed starts). More of those than `max_restarts` within
`restart_window` make it FATAL; a process that had been running longer is always
restarted, at once, however often that happens. FATAL is not forever either: after
`fatal_retry` seconds the service is tried again (circus' `retry_in`), 0 meaning never.

No clock, no process, no state machine here: the daemon passes the facts in and
carries the decision out, so every case can be tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

STABLE_AFTER = 1.0  # a process running this long before it dies was no crash loop
BACKOFF_FIRST = 0.1  # the second consecutive crash waits this long, then doubles


class Verdict(StrEnum):
    RESTART = "restart"  # after `delay` seconds (BACKOFF, or at once)
    LEAVE = "leave"  # the service's `restart` policy says so: EXITED
    FATAL = "fatal"  # a crash loop: give up until `fatal_retry` (or a human) says again


@dataclass(frozen=True)
class Limits:
    max_restarts: int  # crash-loop deaths allowed within the window
    restart_window: float  # seconds
    backoff_max: float  # the longest pause before a restart, seconds


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay: float = 0.0  # RESTART: seconds to wait first
    consecutive: int = 0  # deaths in a row with no stable run between, this one included
    crash_times: tuple[float, ...] = ()  # crash-loop deaths within the window, for the next


def after_death(
    *,
    restart: str,
    clean_exit: bool,
    ran_for: float | None,
    consecutive: int,
    crash_times: Sequence[float],
    now: float,
    limits: Limits,
) -> Decision:
    """What to do about a process that just died on its own (not stopped by us).

    `restart` is the service's policy ("always", "on-failure", "never"); `ran_for` how
    long it had been RUNNING (None: it died while still starting); `consecutive` and
    `crash_times` are what the previous decision returned; `now` a monotonic time.
    """
    if restart == "never" or (restart == "on-failure" and clean_exit):
        return Decision(Verdict.LEAVE, consecutive=consecutive, crash_times=tuple(crash_times))
    recent = tuple(t for t in crash_times if now - t < limits.restart_window)
    if ran_for is not None and ran_for >= STABLE_AFTER:
        # it had been fine: a crash, not a crash loop. At once, and never toward FATAL;
        # it starts a new run of consecutive deaths, so a quick next death backs off.
        return Decision(Verdict.RESTART, 0.0, consecutive=1, crash_times=recent)
    consecutive += 1
    recent += (now,)
    if len(recent) > limits.max_restarts:
        return Decision(Verdict.FATAL, consecutive=consecutive, crash_times=recent)
    return Decision(Verdict.RESTART, backoff(consecutive, limits.backoff_max), consecutive, recent)


def backoff(consecutive: int, backoff_max: float) -> float:
    """The pause before restarting after `consecutive` deaths in a row: none after the
    first, then 0.1 s doubling up to `backoff_max`."""
    if consecutive <= 1:
        return 0.0
    return min(backoff_max, BACKOFF_FIRST * 2 ** (consecutive - 2))


def fatal_retry_at(fatal_since: float, fatal_retry: float) -> float | None:
    """When a service that went FATAL at `fatal_since` is tried again; None: never."""
    return fatal_since + fatal_retry if fatal_retry > 0 else None
