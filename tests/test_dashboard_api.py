"""The dashboard's JSON API and the control API, over real HTTP against a running stack:
who may call them (the token, always; a browser session's cookie and CSRF token), what
they show (replicas, events, logs, jobs, history) and what they change (restart, stop,
start, scale, signal, reload, cancel, requeue), each checked against the processes.

The module's stack has no `[gateway] token`: the originals' API is open, and the
dashboard still wants the automatic token from the run directory.
"""

from __future__ import annotations

import os
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from procorch.gateway.session import COOKIE
from tests.conftest import GatewayStack, command_service, error, jobs_table, ok, wait_for

# A command service that says which signal it got, in its log
LISTENER = (
    "import signal, sys, time\n"
    "def said(sig, frame):\n"
    "    print('got', signal.Signals(sig).name, flush=True)\n"
    "signal.signal(signal.SIGUSR1, said)\n"
    "print('listening', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)
JOB_MODULE = """\
def boom():
    raise RuntimeError("boom on purpose")

def fine(x):
    return x * 2
"""


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    root = tmp_path_factory.mktemp("dashboard")
    (root / "dashjobs.py").write_text(JOB_MODULE)
    s = GatewayStack(root)
    extra = command_service("Listener", LISTENER) + command_service("Pair", LISTENER, replicas=2)
    jobs = jobs_table(max_attempts=1, functions={"boom": "dashjobs:boom", "fine": "dashjobs:fine"})
    s.write(jobs + f"\n[gateway]\nenabled = true\nport = {s.port}\n" + textwrap.dedent(extra))
    try:
        s.up()
        s.token = (s.run_dir / "gateway.token").read_text().strip()
        s.http.headers["Authorization"] = f"Bearer {s.token}"
        yield s
    finally:
        s.cleanup()


def pids(dash: GatewayStack, name: str) -> list[int]:
    return [r["pid"] for r in dash.replicas(name)]


def overview_service(dash: GatewayStack, name: str) -> dict[str, Any]:
    data = ok(dash.get("/api/overview"))
    return next(s for s in data["services"] if s["name"] == name)


# -- who may call ------------------------------------------------------------------------


def test_the_dashboard_api_needs_the_token_even_without_a_configured_one(
    dash: GatewayStack,
) -> None:
    bare = requests.Session()
    assert bare.get(f"{dash.url}/jobs", timeout=10).status_code == 200  # the originals': open
    for method, path in [
        ("GET", "/api/overview"),
        ("GET", "/api/events"),
        ("POST", "/api/services/Listener/restart"),
        ("POST", "/api/reload"),
    ]:
        response = bare.request(method, dash.url + path, timeout=10)
        assert error(response, 401) == "a valid bearer token is required"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="procorch"'
        wrong = {"Authorization": "Bearer not-the-token"}
        assert bare.request(method, dash.url + path, headers=wrong, timeout=10).status_code == 401
    assert (dash.run_dir / "gateway.token").stat().st_mode & 0o777 == 0o600


def test_a_browser_session_trades_the_token_for_a_cookie_and_a_clean_address(
    dash: GatewayStack,
) -> None:
    browser = requests.Session()
    first = browser.get(f"{dash.url}/ui?token={dash.token}", allow_redirects=False, timeout=10)
    assert first.status_code == 303 and first.headers["Location"] == "/ui"
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert dash.token not in cookie  # the cookie stands for the token, it is not the token
    page = browser.get(f"{dash.url}/ui", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert dash.token not in page.text
    assert ok(browser.get(f"{dash.url}/api/overview", timeout=10))["services"]
    # a wrong token or none: a page that says what to do, and no cookie
    for url in (f"{dash.url}/ui?token=nope", f"{dash.url}/ui"):
        refused = requests.get(url, allow_redirects=False, timeout=10)
        assert refused.status_code == 401 and "procorch dashboard" in refused.text
        assert "Set-Cookie" not in refused.headers


def test_a_cookie_alone_changes_nothing_without_the_pages_csrf_token(dash: GatewayStack) -> None:
    browser = requests.Session()
    browser.get(f"{dash.url}/ui?token={dash.token}", timeout=10)
    page = browser.get(f"{dash.url}/ui", timeout=10).text
    csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
    assert len(csrf) == 64 and csrf != browser.cookies[COOKIE]
    before = pids(dash, "Listener")
    url = f"{dash.url}/api/services/Listener/restart"
    assert "X-CSRF-Token" in error(browser.post(url, timeout=10), 403)
    wrong = {"X-CSRF-Token": "x"}
    assert "X-CSRF-Token" in error(browser.post(url, headers=wrong, timeout=10), 403)
    other = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert "another site" in error(browser.post(url, headers=other, timeout=10), 403)
    cross = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    assert "cross-site" in error(browser.post(url, headers=cross, timeout=10), 403)
    assert pids(dash, "Listener") == before  # none of them restarted anything
    same = {"X-CSRF-Token": csrf, "Origin": dash.url, "Sec-Fetch-Site": "same-origin"}
    done = ok(browser.post(url, headers=same, timeout=30))
    assert done["replicas"][0]["pid"] not in before
    assert pids(dash, "Listener") == [done["replicas"][0]["pid"]]


def test_static_assets_are_served_without_a_session(dash: GatewayStack) -> None:
    response = requests.get(f"{dash.url}/ui/static/app.js", timeout=10)
    assert response.status_code == 200
    assert "javascript" in response.headers["Content-Type"]
    assert error(requests.get(f"{dash.url}/ui/static/../token.py", timeout=10), 404)


# -- what it shows -----------------------------------------------------------------------


def test_the_overview_shows_every_replica_as_the_daemon_sees_it(dash: GatewayStack) -> None:
    status = {(p["name"], p["replica"]): p for p in dash.status()["services"]}

    def agrees() -> dict[str, Any] | None:  # the overview is up to a second old
        data = ok(dash.get("/api/overview"))
        shown = {(s["name"], r["replica"]): r for s in data["services"] for r in s["replicas"]}
        same = {key: r["pid"] for key, r in shown.items()} == {
            key: p["pid"] for key, p in status.items()
        }
        return data if same else None

    data = wait_for(agrees, timeout=3.0)
    assert data["daemon"]["state"] == "running" and data["daemon"]["pid"] == dash.daemon_pid()
    shown = {(s["name"], r["replica"]): r for s in data["services"] for r in s["replicas"]}
    for replica in shown.values():
        assert replica["state"] == "running"
        assert replica["rss_bytes"] is None or replica["rss_bytes"] > 1_000_000
    names = [s["name"] for s in data["services"]]
    assert set(names) == {"Gateway", "Listener", "Pair", "JobWorker"}
    pair = next(s for s in data["services"] if s["name"] == "Pair")
    assert pair["state"] == "running" and pair["health"] == "healthy"
    assert len(pair["series"]["t"]) == len(pair["series"]["rss_bytes"]) >= 1
    assert data["jobs"]["counts"].keys() >= {"pending", "done", "failed"}


def test_a_kill_shows_in_the_overview_within_two_seconds(
    dash: GatewayStack,
) -> None:
    old = overview_service(dash, "Pair")["replicas"][1]
    os.kill(old["pid"], signal.SIGKILL)

    def replaced() -> dict[str, Any] | None:
        now = overview_service(dash, "Pair")["replicas"][1]
        return now if now["restarts"] == old["restarts"] + 1 and now["pid"] else None

    now = wait_for(replaced, timeout=2.0)
    assert now["pid"] != old["pid"] and psutil.pid_exists(now["pid"])


def test_a_service_page_has_its_events_and_a_log_that_follows(dash: GatewayStack) -> None:
    page = ok(dash.get("/api/services/listener"))  # any case
    assert page["service"]["name"] == "Listener"
    mine = [e for e in page["events"] if "service" in e]
    assert mine and all(e["service"] == "Listener" for e in mine)
    log = wait_for(lambda: (got := ok(dash.get("/api/services/Listener/log")))["lines"] and got)
    assert "listening" in log["lines"]
    pid = pids(dash, "Listener")[0]
    os.kill(pid, signal.SIGUSR1)
    follow = wait_for(
        lambda: (
            (got := ok(dash.get(f"/api/services/Listener/log?after={log['offset']}")))["lines"]
            and got
        )
    )
    assert follow["lines"] == ["got SIGUSR1"] and follow["offset"] > log["offset"]
    assert ok(dash.get(f"/api/services/Listener/log?after={follow['offset']}"))["lines"] == []
    assert "no replica 7" in error(dash.get("/api/services/Listener/log?replica=7"), 404)
    assert "no service named" in error(dash.get("/api/services/Nope"), 404)
    assert "integer" in error(dash.get("/api/services/Listener/log?after=x"), 400)
    assert "between 1 and" in error(dash.get("/api/services/Listener/log?lines=0"), 400)


def test_events_follow_and_filter(dash: GatewayStack) -> None:
    first = ok(dash.get("/api/events?limit=5"))
    assert 0 < len(first["events"]) <= 5 and first["offset"] > 0
    ok(dash.post("/api/services/Listener/signal", json={"signal": "USR1"}))
    later = wait_for(
        lambda: (got := ok(dash.get(f"/api/events?after={first['offset']}")))["events"] and got
    )
    assert [e["event"] for e in later["events"]] == ["signalled"]
    assert later["events"][0]["service"] == "Listener"
    only = ok(dash.get("/api/events?limit=1&kind=signalled&service=Listener"))["events"]
    assert len(only) == 1 and only[0]["event"] == "signalled"  # the last that match
    assert "signalled" in ok(dash.get("/api/events?limit=1000"))["kinds"]


def test_a_page_holding_the_history_gets_only_its_newest_point(dash: GatewayStack) -> None:
    def grown() -> dict[str, Any] | None:
        data = ok(dash.get("/api/overview"))
        return data if len(data["services"][0]["series"]["t"]) >= 3 else None

    whole = wait_for(grown, timeout=5.0)
    series = whole["services"][0]["series"]
    assert len(set(map(len, series.values()))) == 1  # every column as long as the times
    newest = series["t"][-1]
    later = wait_for(
        lambda: (got := ok(dash.get(f"/api/overview?since={newest}")))["time"] > newest and got
    )
    for service in later["services"]:
        assert all(len(values) == 1 for values in service["series"].values()), service["name"]
        assert service["series"]["t"][0] > newest or service["name"] not in names(whole)
    stale = ok(dash.get(f"/api/overview?since={series['t'][0] - 1}"))  # missed points
    assert len(stale["services"][0]["series"]["t"]) > 1
    one = ok(dash.get(f"/api/services/Pair?since={later['time']}"))["service"]["series"]
    assert len(one["t"]) == 1
    assert "`since`" in error(dash.get("/api/overview?since=yesterday"), 400)
    assert "`since`" in error(dash.get("/api/overview?since=nan"), 400)


def names(overview: dict[str, Any]) -> set[str]:
    return {s["name"] for s in overview["services"]}


# -- what it changes ---------------------------------------------------------------------


def test_restart_stop_and_start_a_service(dash: GatewayStack) -> None:
    before = pids(dash, "Listener")
    overview_service(dash, "Listener")  # the overview is fresh now, for a second
    done = ok(dash.post("/api/services/Listener/restart"))
    assert done["status"] == "success" and done["service"] == "Listener"
    (replica,) = done["replicas"]
    assert replica["state"] == "running" and replica["pid"] not in before
    # the change's own author sees it at once, not a refresh later
    assert overview_service(dash, "Listener")["replicas"][0]["pid"] == replica["pid"]
    stopped = ok(dash.post("/api/services/Listener/stop"))
    assert [r["state"] for r in stopped["replicas"]] == ["stopped"]
    assert not psutil.pid_exists(replica["pid"])
    started = ok(dash.post("/api/services/Listener/start"))
    assert [r["state"] for r in started["replicas"]] == ["running"]
    assert pids(dash, "Listener") == [started["replicas"][0]["pid"]]


def test_a_rolling_restart_replaces_every_replica(dash: GatewayStack) -> None:
    before = set(pids(dash, "Pair"))
    done = ok(dash.post("/api/services/Pair/restart", json={"rolling": True}))
    after = {r["pid"] for r in done["replicas"]}
    assert len(after) == 2 and not after & before
    assert all(r["state"] == "running" for r in done["replicas"])


def test_scale_up_and_down(dash: GatewayStack) -> None:
    kept = pids(dash, "Pair")
    up = ok(dash.post("/api/services/Pair/scale", json={"replicas": 3}))
    assert [r["replica"] for r in up["replicas"]] == [0, 1, 2]
    assert [r["pid"] for r in up["replicas"]][:2] == kept  # the first two were not touched
    assert len(overview_service(dash, "Pair")["replicas"]) == 3
    down = ok(dash.post("/api/services/Pair/scale", json={"replicas": 2}))
    assert [r["pid"] for r in down["replicas"]] == kept


def test_signal_reaches_the_process(dash: GatewayStack) -> None:
    sent = ok(dash.post("/api/services/Listener/signal", json={"signal": "usr1"}))
    assert sent["signal"] == "SIGUSR1"
    assert [r["signalled"] for r in sent["results"]] == [True]
    log = dash.run_dir / "logs" / "Listener.0.log"
    wait_for(lambda: "got SIGUSR1" in log.read_text())


def test_reload_reads_the_config_file_again(dash: GatewayStack) -> None:
    plan = ok(dash.post("/api/reload", json={"dry_run": True}))
    assert plan["applied"] is False and plan["plan"]["added"] == []
    original = dash.config.read_text()
    dash.config.write_text(original + command_service("Extra", LISTENER))
    try:
        dry = ok(dash.post("/api/reload", json={"dry_run": True}))
        assert dry["plan"]["added"] == ["Extra"] and not dash.replicas("Extra")
        done = ok(dash.post("/api/reload"))
        assert done["applied"] is True and dash.replicas("Extra")[0]["state"] == "running"
        dash.config.write_text(original + "[services.Bad]\nreplicas = 'x'\n")
        assert "replicas" in error(dash.post("/api/reload"), 400)
    finally:
        dash.config.write_text(original)
        ok(dash.post("/api/reload"))
    assert not dash.replicas("Extra")


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/api/services/Nope/restart", None, 404, "no service named 'Nope'"),
        ("/api/services/Pair/explode", None, 404, "no such endpoint"),
        ("/api/services/Pair/scale", {"replicas": 0}, 400, "it must be at least 1"),
        ("/api/services/Pair/scale", {"replicas": 1001}, 400, "it must be at most 1000"),
        ("/api/services/Pair/scale", {"replicas": "3"}, 400, "must be an integer"),
        ("/api/services/Pair/scale", {}, 400, "replicas is required"),
        ("/api/services/Pair/scale", {"replicas": 2, "x": 1}, 400, "unknown field"),
        ("/api/services/Pair/restart", {"rolling": "yes"}, 400, "true or false"),
        ("/api/services/Pair/signal", {"signal": "NOPE"}, 400, "must be one of abrt, alrm"),
        ("/api/services/Pair/signal", {"signal": 10}, 400, "must be one of"),
        ("/api/services/Pair/signal", {}, 400, "signal is required"),
        ("/api/services/Pair/start", {"now": True}, 400, "unknown field 'now' (known: none)"),
        ("/api/services/Pair/stop", [1], 400, "JSON object"),
        ("/api/jobs/999999/requeue", None, 404, "999999"),
        ("/api/jobs/abc/cancel", None, 404, "no job"),
    ],
)
def test_bad_control_requests_get_one_line_and_change_nothing(
    dash: GatewayStack, path: str, body: Any, status: int, words: str
) -> None:
    before = {name: pids(dash, name) for name in ("Pair", "Listener")}
    assert words in error(dash.post(path, json=body), status)
    assert {name: pids(dash, name) for name in ("Pair", "Listener")} == before


# -- jobs --------------------------------------------------------------------------------


def test_jobs_overview_list_and_a_failed_jobs_requeue(dash: GatewayStack) -> None:
    failed = ok(dash.post("/jobs", json={"function": "boom"}))["job_id"]
    good = ok(dash.post("/jobs", json={"function": "fine", "args": [21]}))["job_id"]
    wait_for(lambda: ok(dash.get(f"/api/jobs/{failed}"))["status"] == "failed")
    wait_for(lambda: ok(dash.get(f"/api/jobs/{good}"))["status"] == "done")
    job = ok(dash.get(f"/api/jobs/{failed}"))
    assert "boom on purpose" in job["error"] and len(job["errors"]) == 1
    page = ok(dash.get("/api/jobs?status=failed&function=boom"))
    assert failed in [j["job_id"] for j in page["jobs"]] and page["limit"] == 50
    overview = wait_for(
        lambda: (got := ok(dash.get("/api/jobs/overview")))["counts"]["failed"] >= 1 and got
    )
    assert overview["backend"] == "sqlite" and overview["durations"]["count"] >= 2
    assert overview["series"]["t"] and "finished_per_s" in overview["series"]
    assert "done" in error(dash.post(f"/api/jobs/{good}/requeue"), 409)
    again = ok(dash.post(f"/api/jobs/{failed}/requeue"))
    assert again["job"]["job_id"] == failed  # pending, or failed again already
    # failed again, each attempt's error kept
    wait_for(lambda: len(ok(dash.get(f"/api/jobs/{failed}"))["errors"]) == 2)
    assert ok(dash.get(f"/api/jobs/{failed}"))["status"] == "failed"


def test_cancel_a_job_waiting_for_its_time(dash: GatewayStack) -> None:
    job_id = ok(dash.post("/jobs", json={"function": "fine", "args": [1], "delay": 3600}))["job_id"]
    cancelled = ok(dash.post(f"/api/jobs/{job_id}/cancel"))
    assert cancelled["job"]["status"] == "cancelled"
    assert "cancelled" in error(dash.post(f"/api/jobs/{job_id}/cancel"), 409)


# -- no secret anywhere ------------------------------------------------------------------


def test_the_token_appears_in_no_answer_log_or_event(dash: GatewayStack) -> None:
    answers = [
        dash.get(path).text
        for path in ("/api/overview", "/api/events?limit=1000", "/api/services/Gateway")
    ]
    answers.append(dash.get("/api/services/Gateway/log?lines=1000").text)
    assert not [text for text in answers if dash.token in text]
    written = [
        f.read_text(errors="replace")
        for f in Path(dash.run_dir).rglob("*")
        if f.is_file() and f.name != "gateway.token" and f.suffix in ("", ".log", ".json")
    ]
    assert not [text for text in written if dash.token in text]


# -- procorch dashboard ------------------------------------------------------------------


def test_procorch_dashboard_prints_an_address_that_signs_in(dash: GatewayStack) -> None:
    result = dash.cli("dashboard", "--no-open")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url == f"{dash.url}/ui?token={dash.token}"
    signed_in = requests.get(url, allow_redirects=False, timeout=10)
    assert signed_in.status_code == 303 and COOKIE in signed_in.headers["Set-Cookie"]


def test_procorch_dashboard_says_in_one_line_when_there_is_none(tmp_path: Path) -> None:
    s = GatewayStack(tmp_path)
    s.write(command_service("Lone", "import time; time.sleep(1e6)"))
    try:
        down = s.cli("dashboard", "--no-open")
        assert down.returncode != 0 and down.stdout == ""
        assert down.stderr.count("\n") == 1 and "procorch up --gateway" in down.stderr
        s.up()
        off = s.cli("dashboard", "--no-open")
        assert off.returncode != 0 and off.stderr.count("\n") == 1
        assert "the gateway is not running" in off.stderr
    finally:
        s.cleanup()
