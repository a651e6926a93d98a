"""The schedule decisions (procorch/jobs/schedule.py), alone: ticks, identities, missed ticks."""

from __future__ import annotations

import calendar
import time

import pytest

from procorch.jobs.schedule import (
    CATCH_UP,
    Schedule,
    ScheduleError,
    check_cron,
    check_timezone,
    plan,
)
from procorch.services.protocol import KEY_RETENTION, key_problem


def utc(text: str) -> int:
    """'2026-03-01 03:00:00' (UTC) as a Unix time."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


EVERY_30S = Schedule("often", "fib", every=30)
NIGHTLY = Schedule("nightly", "backup", cron="0 3 * * *")


def test_cron_expressions() -> None:
    assert check_cron("0 3 * * *") == "0 3 * * *"
    assert check_cron("@daily") == "@daily"
    for bad in ["61 * * * *", "* * * *", "* * * * * *", "not cron", "", "@sometimes"]:
        with pytest.raises(ScheduleError, match="expected a cron expression"):
            check_cron(bad)


def test_time_zones() -> None:
    assert check_timezone("Europe/Paris") == "Europe/Paris"
    for bad in ["Mars/Base", "../etc/passwd", ""]:
        with pytest.raises(ScheduleError, match="unknown time zone"):
            check_timezone(bad)


def test_every_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    # the same ticks whoever computes them, whenever it started
    assert EVERY_30S.next_after(1000) == 1020
    assert EVERY_30S.next_after(1020) == 1050  # strictly after
    assert EVERY_30S.latest_at(1049.9) == 1020
    assert EVERY_30S.latest_at(1050) == 1050
    assert EVERY_30S.ticks(1000, 1100) == [1020, 1050, 1080]
    assert EVERY_30S.count(1000, 1100) == 3
    assert EVERY_30S.count(1000, 1000 + 30 * 10**6) == 10**6


def test_cron_ticks_in_utc_and_in_a_time_zone() -> None:
    start = utc("2026-03-01 12:00:00")
    assert NIGHTLY.next_after(start) == utc("2026-03-02 03:00:00")
    assert NIGHTLY.latest_at(start) == utc("2026-03-01 03:00:00")
    assert NIGHTLY.latest_at(utc("2026-03-01 03:00:00")) == utc("2026-03-01 03:00:00")
    assert NIGHTLY.ticks(start, start + 3 * 86400) == [
        utc(f"2026-03-0{day} 03:00:00") for day in (2, 3, 4)
    ]
    paris = Schedule("nightly", "backup", cron="0 3 * * *", timezone="Europe/Paris")
    assert paris.next_after(start) == utc("2026-03-02 02:00:00")  # CET is UTC+1
    # across the change to summer time (29 March 2026): 03:00 CEST is 01:00 UTC
    assert paris.next_after(utc("2026-03-29 12:00:00")) == utc("2026-03-30 01:00:00")
    assert paris.spec == "cron 0 3 * * * (Europe/Paris)"
    assert EVERY_30S.spec == "every 30s"
    assert Schedule("x", "f", every=7200).spec == "every 2h"


def test_a_ticks_identity_is_its_idempotency_key() -> None:
    key = NIGHTLY.key(utc("2026-03-01 03:00:00"))
    assert key == f"schedule:nightly:{utc('2026-03-01 03:00:00')}"
    assert key_problem(key) is None  # the store takes it as a key
    assert key_problem(Schedule("n" * 64, "f", every=1).key(2**40)) is None


def test_from_a_config_table() -> None:
    table = {"function": "send", "every": 60, "args": [1, "a"], "kwargs": {"to": "x"}}
    schedule = Schedule.of("mail", table)
    assert (schedule.function, schedule.args, dict(schedule.kwargs)) == (
        "send",
        (1, "a"),
        {"to": "x"},
    )
    assert (schedule.every, schedule.cron, schedule.timezone) == (60, None, "UTC")


# -- the missed-tick policy ------------------------------------------------------------


def test_the_tick_that_is_due_fires_once() -> None:
    first = plan(EVERY_30S, done_until=1000, now=1020.01)
    assert (first.fire, first.missed, first.done_until) == (1020, 0, 1020)
    again = plan(EVERY_30S, done_until=first.done_until, now=1025)  # woken again: nothing
    assert (again.fire, again.missed, again.done_until) == (None, 0, 1020)


def test_nothing_before_the_first_tick() -> None:
    decision = plan(EVERY_30S, done_until=1000, now=1019.99)
    assert (decision.fire, decision.missed, decision.done_until) == (None, 0, 1000)


def test_after_a_gap_the_latest_missed_tick_fires_and_the_others_are_counted() -> None:
    # down from 1000 to 1100: 1020, 1050 and 1080 were due; 1080 runs, two are missed
    decision = plan(EVERY_30S, done_until=1000, now=1100)
    assert (decision.fire, decision.missed, decision.done_until) == (1080, 2, 1080)


def test_a_restart_within_the_interval_skips_nothing_and_repeats_nothing() -> None:
    # the daemon fired 1020 and died; up again at 1045: nothing is due, then 1050 is
    assert plan(EVERY_30S, done_until=1020, now=1045).fire is None
    assert plan(EVERY_30S, done_until=1020, now=1050).fire == 1050
    # killed between submitting 1050 and noting it: 1050 is submitted again, under the same
    # key (the same job), not skipped
    again = plan(EVERY_30S, done_until=1020, now=1052)
    assert (again.fire, again.missed) == (1050, 0)
    assert EVERY_30S.key(again.fire) == EVERY_30S.key(1050)


def test_a_tick_too_old_to_catch_up_is_only_counted() -> None:
    # a week down: the latest nightly tick is 9 hours old: it runs; the six before are missed
    done = utc("2026-03-01 03:00:00")
    decision = plan(NIGHTLY, done_until=done, now=utc("2026-03-08 12:00:00"))
    assert (decision.fire, decision.missed) == (utc("2026-03-08 03:00:00"), 6)
    # a weekly tick 5 days old: past the catch-up window, counted, never run
    weekly = Schedule("weekly", "f", cron="0 3 * * 1")  # Mondays; 2 March 2026 is one
    late = plan(weekly, done_until=done, now=utc("2026-03-07 03:00:00"))
    assert (late.fire, late.missed, late.done_until) == (None, 1, utc("2026-03-02 03:00:00"))


def test_the_catch_up_window_is_inside_the_key_retention() -> None:
    # a tick caught up is at most CATCH_UP old; if another daemon submitted it on time its
    # key is still held (it lasts KEY_RETENTION), so the catch-up gets the same job
    assert CATCH_UP < KEY_RETENTION
    daily = Schedule("daily", "f", every=86400)
    oldest = plan(daily, done_until=0, now=86400 + CATCH_UP)
    assert (oldest.fire, oldest.missed) == (86400, 0)
    too_old = plan(daily, done_until=0, now=86400 + CATCH_UP + 1)
    assert (too_old.fire, too_old.missed, too_old.done_until) == (None, 1, 86400)


def test_a_cron_that_never_matches_never_fires() -> None:
    never = Schedule("never", "f", cron="0 0 30 2 *")  # 30 February
    assert plan(never, done_until=0, now=utc("2026-03-01 00:00:00")).fire is None
