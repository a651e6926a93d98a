"""The dashboard's pure parts, alone: the charts' series, the warnings, the session's
derived values and origin rule."""

from __future__ import annotations

from procorch.gateway.history import Histories, Series
from procorch.gateway.live import holds_history, warnings
from procorch.gateway.session import cross_site_problem, derived


def test_counters_become_rates_and_a_reset_is_no_change() -> None:
    s = Series(points=10)
    s.add(100.0, {"rss": 5.0}, {"requests": 10})
    s.add(102.0, {"rss": 6.0}, {"requests": 30})
    s.add(103.0, {"rss": 7.0}, {"requests": 2})  # a replica restarted: counters from 0
    assert s.public() == {
        "t": [100.0, 102.0, 103.0],
        "rss": [5.0, 6.0, 7.0],
        "requests": [None, 10.0, 0.0],
    }
    assert s.newest() == {"t": [103.0], "rss": [7.0], "requests": [0.0]}


def test_a_clock_that_did_not_move_adds_nothing_and_old_points_fall_off() -> None:
    s = Series(points=3)
    for t in (1.0, 2.0, 2.0, 3.0, 4.0):
        s.add(t, {"g": t}, {})
    assert s.public() == {"t": [2.0, 3.0, 4.0], "g": [2.0, 3.0, 4.0]}


def test_a_name_first_seen_later_has_no_value_before() -> None:
    s = Series()
    s.add(1.0, {"a": 1.0}, {})
    s.add(2.0, {"a": 2.0, "b": 9.0}, {})
    assert s.public() == {"t": [1.0, 2.0], "a": [1.0, 2.0], "b": [None, 9.0]}


def test_histories_drop_the_keys_no_longer_sampled() -> None:
    h = Histories(points=5)
    h.add("web", 1.0, {"g": 1.0}, {})
    h.add("gone", 1.0, {"g": 1.0}, {})
    h.keep_only({"web"})
    assert h.public("gone") == {"t": []}
    assert h.public("web") == {"t": [1.0], "g": [1.0]}


def test_a_page_holds_the_history_when_it_has_the_point_before_the_newest() -> None:
    assert holds_history(10.0, previous=10.0)
    assert holds_history(11.0, previous=10.0)
    assert not holds_history(9.0, previous=10.0)  # it missed a point: the whole again
    assert not holds_history(None, previous=10.0)


def service(name: str, health: str, *states: str, last_exit: str | None = None) -> dict:
    replicas = [{"replica": i, "state": s, "last_exit": last_exit} for i, s in enumerate(states)]
    return {"name": name, "state": states[0], "health": health, "replicas": replicas}


def test_warnings_name_fatal_dead_and_unhealthy_services_errors_first() -> None:
    found = warnings(
        ["disk full: cannot write events.log"],
        [
            service("ok", "healthy", "running"),
            service("slow", "unhealthy", "starting"),
            service("broken", "dead", "fatal", last_exit="exit status 3"),
            service("off", "dead", "stopped"),  # stopped on purpose: nothing to warn of
        ],
    )
    assert found == [
        {"level": "error", "service": "broken", "message": "broken.0 is FATAL: exit status 3"},
        {"level": "error", "service": "broken", "message": "broken has no process running"},
        {"level": "warning", "service": None, "message": "disk full: cannot write events.log"},
        {"level": "warning", "service": "slow", "message": "slow is unhealthy (starting)"},
    ]


def test_derived_values_differ_by_purpose_and_reveal_no_token() -> None:
    token = "a-token"
    cookie, csrf = derived(token, "session"), derived(token, "csrf")
    assert cookie != csrf and len(cookie) == len(csrf) == 64
    assert token not in cookie + csrf
    assert derived("another", "session") != cookie


def test_only_the_gateways_own_origin_may_change_things() -> None:
    own = "http://127.0.0.1:5000/"
    assert cross_site_problem(None, own) is None  # not a browser, or a same-origin GET
    assert cross_site_problem("http://127.0.0.1:5000", own) is None
    for other in ("http://127.0.0.1:5001", "https://127.0.0.1:5000", "http://localhost:5000"):
        assert cross_site_problem(other, own) is not None, other
    assert cross_site_problem("null", own) is not None  # a sandboxed frame or a file
