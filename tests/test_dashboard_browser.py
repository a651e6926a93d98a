"""The web dashboard in a real browser: the system's headless Chromium, driven
by playwright, against a real stack (a daemon, its services, the job workers and the
gateway) as a user would use it: the session from the URL `procorch dashboard` prints,
the overview, a kill -9 seen on the page, the service actions through their confirm
dialog, jobs moving the counts and the chart, a failed job requeued, the events, no
console error anywhere, every page at 390 and 1280 px, and each page's screenshot (the
README's, with PROCORCH_SCREENSHOTS=docs/screenshots; see tests/browser.py). One stack
and one browser serve the module: each test changes its own service or its own jobs.
Without /usr/bin/chromium the module is skipped, unless CI is set (then it fails)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import (
    POLL,
    WIDTHS,
    Dashboard,
    browser_session,
    digits,
    job_counts,
    new_context,
    overflow,
    replica_fields,
    require_chromium,
    screenshot,
    until,
    visible_attributes,
    visible_texts,
)
from tests.conftest import GatewayStack, command_service, python_service, wait_for

require_chromium()

from playwright.sync_api import expect  # noqa: E402 (only once Chromium is known to be there)

TOKEN = "dashboard-browser-test-token"
SERVICES = (
    python_service("web", "Counter", replicas=2)  # its requests move: a chart with a shape
    + python_service("api")
    + command_service("cache", "import time; print('cache ready', flush=True); time.sleep(1e6)")
)
TASKS = '''
"""The dashboard tests' job functions: one that always fails, one that fails until a
file exists (so a requeued job can succeed)."""
import os

import procorch


@procorch.job(max_attempts=1)
def boom(why):
    raise RuntimeError(why)


@procorch.job(max_attempts=1)
def flaky(flag):
    if not os.path.exists(flag):
        raise RuntimeError("no flag yet")
    return "ok"
'''
SETTLE = 15_000  # ms a control action may take (a Python service's graceful stop and start)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    """The module's stack: its own services, the job workers (jobs take 40 ms, so 100 of
    them take two seconds on the two workers: long enough to be seen moving) and the
    gateway with a token."""
    root = tmp_path_factory.mktemp("dashboard")
    (root / "dashtasks.py").write_text(TASKS)
    stack = GatewayStack(root, token=TOKEN)
    stack.write_gateway(extra=SERVICES, modules=["dashtasks"], delay=0.04)
    try:
        stack.up()
        wait_for(lambda: stack.get("/health").ok, timeout=10)
        yield stack
    finally:
        stack.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_session()


@pytest.fixture(scope="module")
def session(browser: Any, gw: GatewayStack) -> Iterator[Any]:
    """A browser context signed in as a user is: by opening the URL with the token once."""
    context = new_context(browser)
    page = context.new_page()
    assert page.goto(f"{gw.url}/ui?token={TOKEN}").ok
    page.close()
    yield context
    context.close()


@pytest.fixture
def dash(session: Any, gw: GatewayStack) -> Iterator[Dashboard]:
    """Pages of the signed-in context; any console error or uncaught exception on any of
    them fails the test."""
    dashboard = Dashboard(session, gw.url)
    yield dashboard
    dashboard.close()
    if dashboard.errors:
        pytest.fail("errors in the browser:\n" + "\n".join(dashboard.errors), pytrace=False)


def submit(gw: GatewayStack, function: str, **fields: Any) -> int:
    """A job of `function` submitted through the gateway's API: its id."""
    response = gw.post("/jobs", json={"function": function, **fields})
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def job_status(gw: GatewayStack, job_id: int) -> str:
    return gw.get(f"/job/{job_id}").json()["status"]


@pytest.fixture(scope="module")
def failed_job(gw: GatewayStack) -> int:
    """A job that failed, for the job page's screenshot."""
    job_id = submit(gw, "boom", kwargs={"why": "disk on fire"})
    wait_for(lambda: job_status(gw, job_id) == "failed", timeout=10)
    return job_id


def running(fields: dict[str, str] | None) -> dict[str, str] | None:
    """A replica's fields if the page shows it running with a pid, else None."""
    if fields and fields.get("state") == "running" and fields.get("pid", "").isdigit():
        return fields
    return None


def shown_running(page: Any, service: str, replica: int = 0) -> dict[str, str]:
    return until(
        page,
        lambda: running(replica_fields(page, service, replica)),
        5,
        f"{service}.{replica} shown running with a pid",
    )


def confirm(page: Any, action: str) -> None:
    """Click `action`'s button, see the confirm dialog, say OK, and wait for the outcome."""
    page.get_by_test_id(action).click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    page.get_by_test_id("confirm-ok").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("outcome")).to_contain_text("done", timeout=SETTLE)


def follow(row: Any) -> None:
    """Open what a table row links to: its link if it has one, else the row itself."""
    links = row.locator("a")
    (links.first if links.count() else row).click()


# --- the session -----------------------------------------------------------------------


def test_the_token_url_sets_a_strict_http_only_cookie_and_leaves_a_clean_url(browser, gw):
    context = new_context(browser)
    try:
        signed_in = Dashboard(context, gw.url)
        page = signed_in.watch(context.new_page())
        response = page.goto(f"{gw.url}/ui?token={TOKEN}")
        assert response.status == 200
        assert page.url == f"{gw.url}/ui"  # no token left in the address bar or history
        redirect = response.request.redirected_from
        assert redirect is not None and redirect.response().status == 303
        csp = response.headers["content-security-policy"]
        for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"):
            assert directive in csp, csp
        (cookie,) = [c for c in context.cookies() if c["name"] == "procorch_session"]
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")
        assert TOKEN not in cookie["value"]
        assert "procorch_session" not in page.evaluate("document.cookie")  # HttpOnly indeed
        # the signed-in page works: it shows the services, and nothing went wrong
        expect(page.get_by_test_id("service-row").first).to_be_visible()
        assert not signed_in.errors, signed_in.errors
    finally:
        context.close()


def test_a_change_with_the_cookie_needs_the_csrf_header_and_the_gateways_own_origin(session, gw):
    page = session.new_page()
    try:
        page.goto(f"{gw.url}/ui")
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        assert csrf and TOKEN not in csrf
        # an unknown service: 404 once the request is let through, 403 before
        restart = f"{gw.url}/api/services/nosuch/restart"
        post = """async ([url, headers]) =>
            (await fetch(url, {method: "POST", headers: headers})).status"""
        # from the page itself, as its script would (Origin and Sec-Fetch-Site: its own)
        assert page.evaluate(post, [restart, {}]) == 403
        assert page.evaluate(post, [restart, {"X-CSRF-Token": "0" * len(csrf)}]) == 403
        assert page.evaluate(post, [restart, {"X-CSRF-Token": csrf}]) == 404
        # the cookie without the browser's headers, then as another site would send it
        api = session.request
        assert api.post(restart).status == 403
        assert api.post(restart, headers={"X-CSRF-Token": csrf}).status == 404
        other_site = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert api.post(restart, headers=other_site).status == 403
        cross_site = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
        assert api.post(restart, headers=cross_site).status == 403
        # a program's bearer token needs no CSRF header (no browser sends it by itself)
        assert gw.post("/api/services/nosuch/restart").status_code == 404
        # reading needs no CSRF header
        assert api.get(f"{gw.url}/api/overview").status == 200
    finally:
        page.close()


def test_a_wrong_or_missing_token_is_401_and_signs_nobody_in(browser, gw):
    context = new_context(browser)
    try:
        page = context.new_page()
        response = page.goto(f"{gw.url}/ui?token=not-the-token")
        assert response.status == 401
        assert not [c for c in context.cookies() if c["name"] == "procorch_session"]
        response = page.goto(f"{gw.url}/ui")
        assert response.status == 401
        assert response.headers["content-type"].startswith("text/html")
        assert "procorch dashboard" in page.inner_text("body")  # says how to get in
        api = context.request
        overview = f"{gw.url}/api/overview"
        assert api.get(overview).status == 401
        assert api.get(overview, headers={"Authorization": "Bearer wrong"}).status == 401
        assert api.get(overview, headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
        context.add_cookies([{"name": "procorch_session", "value": "forged", "url": gw.url}])
        assert api.get(overview).status == 401
        assert page.goto(f"{gw.url}/ui").status == 401
    finally:
        context.close()


# --- services ----------------------------------------------------------------------------


def test_the_overview_lists_every_service_and_replica_as_the_daemon_does(dash, gw):
    page = dash.open("#/")
    replicas: dict[str, list[dict[str, Any]]] = {}
    for replica in gw.status()["services"]:
        replicas.setdefault(replica["name"], []).append(replica)
    assert {"web", "api", "cache", "Gateway", "JobWorker"} <= set(replicas)
    until(
        page,
        lambda: sorted(visible_attributes(page, "service-row", "data-service")) == sorted(replicas),
        5,
        f"one service-row for each of {sorted(replicas)}",
    )
    expect(page.get_by_test_id("daemon")).to_contain_text("running")
    assert len(visible_texts(page, "service-chart")) == len(replicas)
    for name, copies in replicas.items():
        for replica in copies:
            fields = shown_running(page, name, replica["replica"])
            assert int(fields["pid"]) == replica["pid"], (name, replica, fields)
            assert digits(fields["restarts"]) >= 0, fields
    page.locator('[data-testid="service-row"][data-service="web"]').get_by_test_id(
        "service-link"
    ).click()
    expect(page).to_have_url(re.compile(r"#/services/web$"))
    expect(page.get_by_test_id("service-page")).to_have_attribute("data-service", "web")


def test_a_replica_killed_9_shows_its_new_pid_and_restart_count_within_2s(dash, gw):
    page = dash.open("#/")
    before = shown_running(page, "cache")
    old_pid, old_restarts = int(before["pid"]), digits(before["restarts"])
    assert old_pid == gw.pid_of("cache")
    os.kill(old_pid, signal.SIGKILL)

    def replaced() -> dict[str, str] | None:
        fields = replica_fields(page, "cache", 0) or {}
        pid, restarts = fields.get("pid", ""), digits(fields.get("restarts"))
        return fields if pid.isdigit() and int(pid) != old_pid and restarts > old_restarts else None

    after = until(page, replaced, 2.0, "a new pid and one more restart for cache.0")
    assert digits(after["restarts"]) == old_restarts + 1
    assert int(after["pid"]) == gw.pid_of("cache")


def test_restart_asks_first_and_the_page_shows_the_new_pid(dash, gw):
    page = dash.open("#/services/api")
    expect(page.get_by_test_id("service-page")).to_have_attribute("data-service", "api")
    old_pid = int(shown_running(page, "api")["pid"])
    # cancelled: nothing happens
    page.get_by_test_id("action-restart").click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
    page.get_by_test_id("confirm-cancel").click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_hidden()
    page.wait_for_timeout(POLL * 1000 + 200)  # a poll later
    assert int(shown_running(page, "api")["pid"]) == old_pid == gw.pid_of("api")
    # confirmed: a new process, shown on the page
    confirm(page, "action-restart")
    after = until(
        page,
        lambda: (f := running(replica_fields(page, "api", 0))) and int(f["pid"]) != old_pid and f,
        5,
        "api.0 running with a new pid",
    )
    assert int(after["pid"]) == gw.pid_of("api") != old_pid


def test_scaling_from_2_to_3_shows_the_third_replica(dash, gw):
    page = dash.open("#/services/web")
    shown_running(page, "web", 1)
    assert replica_fields(page, "web", 2) is None
    page.get_by_test_id("scale-input").fill("3")
    confirm(page, "action-scale")
    third = shown_running(page, "web", 2)
    (replica,) = [r for r in gw.replicas("web") if r["replica"] == 2]
    assert replica["pid"] == int(third["pid"])


def test_the_service_page_shows_its_events_and_its_log_tail(dash, gw):
    page = dash.open("#/services/cache")
    expect(page.get_by_test_id("log")).to_contain_text("cache ready", timeout=5000)
    events = page.get_by_test_id("service-events").get_by_test_id("event-row")
    expect(events.first).to_be_visible(timeout=5000)
    expect(page.get_by_test_id("service-events")).to_contain_text("spawned")


# --- jobs --------------------------------------------------------------------------------

STATUSES = {"pending", "running", "done", "failed", "cancelled", "waiting"}


def test_100_jobs_move_the_counts_and_the_chart_and_page_through(dash, gw):
    page = dash.open("#/jobs")
    before = until(
        page,
        lambda: (c := job_counts(page)).keys() >= STATUSES and min(c.values()) >= 0 and c,
        5,
        "a count for each status",
    )
    chart = page.get_by_test_id("jobs-chart")
    expect(chart).to_be_visible()
    expect(page.get_by_test_id("durations-chart")).to_be_visible()
    page.wait_for_timeout(POLL * 1000 + 200)  # drawn from a poll's data
    quiet = chart.screenshot()
    for _ in range(100):
        assert gw.post("/job/100").status_code == 200
    seen: list[dict[str, int]] = []

    def all_done() -> bool:
        seen.append(job_counts(page))
        return seen[-1].get("done", -1) >= before["done"] + 100

    until(page, all_done, 20, "the done count up by 100")
    assert seen[-1]["done"] == before["done"] + 100, seen[-1]
    # seen on the way: jobs waiting or half of them done
    assert any(
        c["pending"] + c["running"] > 0 or before["done"] < c["done"] < before["done"] + 100
        for c in seen
    ), seen
    until(page, lambda: chart.screenshot() != quiet, 3, "the jobs chart changing")
    # more than a page: the next one has other jobs
    first_page = visible_attributes(page, "job-row", "data-job")
    info = page.get_by_test_id("page-info").inner_text()
    page.get_by_test_id("page-next").click()
    expect(page.get_by_test_id("page-info")).not_to_have_text(info)
    second_page = until(
        page,
        lambda: (ids := visible_attributes(page, "job-row", "data-job")) != first_page and ids,
        5,
        "the next page's jobs",
    )
    assert not set(first_page) & set(second_page)


def test_a_failed_job_found_by_its_status_is_opened_and_requeued(dash, gw):
    flag = gw.root / "requeue.flag"
    job_id = submit(gw, "flaky", args=[str(flag)])
    wait_for(lambda: job_status(gw, job_id) == "failed", timeout=10)
    page = dash.open("#/jobs")
    page.get_by_test_id("filter-status").select_option("failed")
    row = page.locator(f'[data-testid="job-row"][data-job="{job_id}"]')
    expect(row).to_be_visible(timeout=5000)
    until(
        page,
        lambda: all("failed" in text for text in visible_texts(page, "job-row")),
        5,
        "only failed jobs listed",
    )
    follow(row)
    expect(page).to_have_url(re.compile(rf"#/jobs/{job_id}$"))
    detail = page.get_by_test_id("job-detail")
    expect(detail).to_have_attribute("data-job", str(job_id))
    status = detail.locator('[data-field="status"]')
    expect(status).to_contain_text("failed")
    expect(page.get_by_test_id("attempt").first).to_contain_text("no flag yet")
    flag.touch()
    confirm(page, "action-requeue")
    expect(status).to_contain_text("done", timeout=5000)
    assert job_status(gw, job_id) == "done"


def test_a_pending_job_is_cancelled_from_its_page_and_not_twice(dash, gw):
    job_id = submit(gw, "fib", args=[10], delay=600)
    page = dash.open(f"#/jobs/{job_id}")
    status = page.get_by_test_id("job-detail").locator('[data-field="status"]')
    expect(status).to_contain_text("pending")
    confirm(page, "action-cancel")
    expect(status).to_contain_text("cancelled", timeout=5000)
    assert job_status(gw, job_id) == "cancelled"
    # once more: refused, and the page says why
    dash.expect_refusal(409)
    page.get_by_test_id("action-cancel").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("outcome")).to_contain_text(f"job {job_id} is already cancelled")
    expect(status).to_contain_text("cancelled")


# --- events and every page ---------------------------------------------------------------


def test_the_events_page_filters_by_service_and_kind(dash, gw):
    page = dash.open("#/events")
    expect(page.get_by_test_id("event-row").first).to_be_visible(timeout=5000)
    page.get_by_test_id("filter-service").select_option("cache")
    until(
        page,
        lambda: (rows := visible_texts(page, "event-row")) and all("cache" in r for r in rows),
        5,
        "only cache's events listed",
    )
    page.get_by_test_id("filter-kind").select_option("spawned")
    until(
        page,
        lambda: (
            (rows := visible_texts(page, "event-row"))
            and all("cache" in r and "spawned" in r for r in rows)
        ),
        5,
        "only cache's spawned events listed",
    )


def test_clicking_through_every_page_logs_no_error(dash, gw, failed_job):
    page = dash.open("#/")
    page.locator('[data-testid="service-row"][data-service="api"]').get_by_test_id(
        "service-link"
    ).click()
    expect(page.get_by_test_id("service-page")).to_have_attribute("data-service", "api")
    page.get_by_test_id("nav-jobs").click()
    expect(page).to_have_url(re.compile(r"#/jobs$"))
    row = page.locator(f'[data-testid="job-row"][data-job="{failed_job}"]')
    page.get_by_test_id("filter-status").select_option("failed")
    expect(row).to_be_visible(timeout=5000)
    follow(row)
    expect(page.get_by_test_id("job-detail")).to_have_attribute("data-job", str(failed_job))
    expect(page.get_by_test_id("attempt").first).to_contain_text("disk on fire")
    page.get_by_test_id("nav-events").click()
    expect(page.get_by_test_id("event-row").first).to_be_visible(timeout=5000)
    page.get_by_test_id("nav-overview").click()
    expect(page.get_by_test_id("service-row").first).to_be_visible()
    page.wait_for_timeout(POLL * 1000 + 200)  # a poll on the last page too
    assert not dash.errors, dash.errors


PAGES = {  # name: (route, what shows once its data came)
    "overview": ("#/", "service-chart"),
    "service": ("#/services/web", "log"),
    "jobs": ("#/jobs", "job-row"),
    "job": ("#/jobs/{job}", "attempt"),
    "events": ("#/events", "event-row"),
}


@pytest.mark.parametrize("name", PAGES)
def test_each_page_fits_390_and_1280_px_and_is_screenshotted(dash, gw, failed_job, name):
    route, ready = PAGES[name]
    pages = {width: dash.open(route.format(job=failed_job), width=width) for width in WIDTHS}
    for page in pages.values():
        expect(page.get_by_test_id(ready).first).to_be_visible(timeout=5000)
    pages[WIDTHS[0]].wait_for_timeout(POLL * 1000 + 200)  # charts drawn from a second poll
    for width, page in pages.items():
        assert (problem := overflow(page)) is None, f"{name} at {width}px: {problem}"
        screenshot(page, name, width)
