"""The restart policy alone: a pure function of the facts about a death; its config keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from procorch.config import Config, ConfigError, Settings, load_config
from procorch.supervisor.policy import (
    STABLE_AFTER,
    Decision,
    Limits,
    Verdict,
    after_death,
    backoff,
    fatal_retry_at,
)

LIMITS = Limits(max_restarts=5, restart_window=60.0, backoff_max=5.0)


def death(
    ran_for: float | None,
    previous: Decision | None = None,
    now: float = 100.0,
    restart: str = "always",
    clean_exit: bool = False,
    limits: Limits = LIMITS,
) -> Decision:
    return after_death(
        restart=restart,
        clean_exit=clean_exit,
        ran_for=ran_for,
        consecutive=previous.consecutive if previous else 0,
        crash_times=previous.crash_times if previous else (),
        now=now,
        limits=limits,
    )


def test_a_long_running_process_is_always_restarted_at_once() -> None:
    decision = None
    for i in range(100):  # a hundred kills within a second of each other's restart
        decision = death(ran_for=STABLE_AFTER + 0.5, previous=decision, now=100.0 + i * 1.6)
        assert decision.verdict is Verdict.RESTART
        assert decision.delay == 0.0
        assert decision.crash_times == ()


def test_a_crash_loop_goes_fatal_after_max_restarts_within_the_window() -> None:
    decision = None
    verdicts = []
    for i in range(6):
        decision = death(ran_for=None, previous=decision, now=100.0 + i)
        verdicts.append(decision.verdict)
    assert verdicts == [Verdict.RESTART] * 5 + [Verdict.FATAL]


def test_a_death_soon_after_running_counts_as_a_crash_loop() -> None:
    decision = None
    for i in range(6):
        decision = death(ran_for=STABLE_AFTER - 0.1, previous=decision, now=100.0 + i)
    assert decision is not None and decision.verdict is Verdict.FATAL


def test_crash_loop_deaths_older_than_the_window_are_forgotten() -> None:
    decision = None
    for i in range(20):  # one crash-loop death every 15 s: at most 4 within 60 s
        decision = death(ran_for=None, previous=decision, now=100.0 + 15 * i)
        assert decision.verdict is Verdict.RESTART
        assert len(decision.crash_times) <= 4


def test_stable_runs_between_loops_do_not_count_but_do_not_clear_the_window() -> None:
    decision = None
    for i in range(3):
        decision = death(ran_for=None, previous=decision, now=100.0 + i)
    decision = death(ran_for=30.0, previous=decision, now=104.0)
    assert decision.verdict is Verdict.RESTART and len(decision.crash_times) == 3
    for i in range(2):
        decision = death(ran_for=None, previous=decision, now=105.0 + i)
        assert decision.verdict is Verdict.RESTART
    decision = death(ran_for=None, previous=decision, now=107.0)
    assert decision.verdict is Verdict.FATAL  # the sixth crash-loop death within 60 s


def test_backoff_is_immediate_then_doubles_up_to_the_cap() -> None:
    limits = Limits(max_restarts=100, restart_window=60.0, backoff_max=0.4)
    decision = None
    delays = []
    for i in range(6):
        decision = death(ran_for=None, previous=decision, now=100.0 + i, limits=limits)
        delays.append(decision.delay)
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.4, 0.4]
    # a stable run ends the series: at once again, and the next quick death waits 0.1 s
    decision = death(ran_for=10.0, previous=decision, now=120.0, limits=limits)
    assert (decision.delay, decision.consecutive) == (0.0, 1)
    decision = death(ran_for=None, previous=decision, now=121.0, limits=limits)
    assert decision.delay == 0.1
    assert [backoff(n, 5.0) for n in (0, 1, 2, 3, 10)] == [0.0, 0.0, 0.1, 0.2, 5.0]


@pytest.mark.parametrize(
    ("restart", "clean_exit", "verdict"),
    [
        ("never", False, Verdict.LEAVE),
        ("never", True, Verdict.LEAVE),
        ("on-failure", True, Verdict.LEAVE),
        ("on-failure", False, Verdict.RESTART),
        ("always", True, Verdict.RESTART),
    ],
)
def test_the_services_restart_setting_comes_first(
    restart: str, clean_exit: bool, verdict: Verdict
) -> None:
    assert death(ran_for=None, restart=restart, clean_exit=clean_exit).verdict is verdict


def test_max_restarts_zero_gives_up_at_the_first_crash_loop_death_only() -> None:
    limits = Limits(max_restarts=0, restart_window=60.0, backoff_max=5.0)
    assert death(ran_for=5.0, limits=limits).verdict is Verdict.RESTART
    assert death(ran_for=None, limits=limits).verdict is Verdict.FATAL


def test_fatal_retry_time() -> None:
    assert fatal_retry_at(50.0, 60.0) == 110.0
    assert fatal_retry_at(50.0, 0.0) is None  # 0: stay FATAL until a human says otherwise


def test_fatal_retry_is_configured_globally_and_per_service(tmp_path: Path) -> None:
    path = tmp_path / "procorch.toml"
    path.write_text(
        "[procorch]\nfatal_retry = 0\n"
        '[services.a]\ncommand = "true"\nfatal_retry = 2.5\n'
        '[services.b]\ncommand = "true"\n'
    )
    config = load_config(path, environ={})
    assert config.settings.fatal_retry == 0.0
    assert [svc.fatal_retry for svc in config.services] == [2.5, None]  # None: the global
    assert Config.from_json(config.to_json()) == config
    assert Settings(run_dir=tmp_path).fatal_retry == 60.0  # the default
    path.write_text('[services.a]\ncommand = "true"\nfatal_retry = -1\n')
    with pytest.raises(ConfigError, match=r"services\.a\.fatal_retry: expected a number ≥ 0"):
        load_config(path, environ={})
