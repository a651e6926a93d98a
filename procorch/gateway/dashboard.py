"""The web dashboard: its page at `/ui`, its assets, and the read endpoints it polls.

    GET /ui?token=T           start a browser session (cookie), then 303 to a clean /ui
    GET /ui                   the page (one HTML file; the pages are routes of its script)
    GET /ui/static/<path>     its scripts, styles and vendored libraries (package data)
    GET /api/overview?since=  every service and replica, warnings, job counts, history
    GET /api/services/<name>?since=  one service, with its recent events
    GET /api/services/<name>/log?replica=&after=&lines=   a live tail of a replica's log
    GET /api/events?service=&kind=&after=&limit=          the event log, followed
    GET /api/jobs/overview?since=  job counts, throughput, durations, history, schedules
    GET /api/jobs?...  GET /api/jobs/<id>                 as /jobs and /job/<id>

Each page polls one of these once a second; the overview's data is refreshed once per
second for all of them (`live.LiveView`), and `since` spares a page the history it holds.
Who may read them is `session.Access`'s.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, redirect, request, send_from_directory
from flask.typing import ResponseReturnValue

from procorch.config import MAX_INT64
from procorch.gateway.http import fail, query_int, respond, short
from procorch.gateway.jobs import job_id_of, list_jobs
from procorch.gateway.live import DaemonDown, LiveView
from procorch.gateway.session import Access, session_cookie
from procorch.gateway.system import backend
from procorch.supervisor.logs import lines_since, read_lines, size_of, split_stamp
from procorch.supervisor.rundir import RunDir

bp = Blueprint("dashboard", __name__)

UI = Path(__file__).parent / "ui"
CSRF_PLACEHOLDER = "__CSRF_TOKEN__"
# The page runs nothing it did not load from here: no inline script, no eval, no frames.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
EVENTS_SHOWN = 100  # a service page's recent events
EVENTS_SCANNED = 5000  # event log lines read back to find them
MAX_LINES = 1000


def access() -> Access:
    return current_app.extensions["procorch.access"]


def live() -> LiveView:
    view = current_app.extensions.get("procorch.live")
    if view is None:  # one per gateway process, shared by its threads
        view = current_app.extensions.setdefault("procorch.live", LiveView(backend()))
    try:
        return view.current()
    except DaemonDown as exc:
        fail(503, str(exc))


@bp.after_app_request
def page_headers(response: Response) -> Response:
    if request.path == "/ui" or request.path.startswith("/ui/"):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # the token never leaves in one
    return response


# -- the page ----------------------------------------------------------------------------


@bp.get("/ui")
def page() -> ResponseReturnValue:
    guard = access()
    given = request.args.get("token")
    if given is not None:
        if not guard.valid_token(given):
            return _page_refused("This link's token is not the gateway's token.")
        # the token leaves the address bar (and the history) at once
        response = redirect("/ui", 303)
        return session_cookie(response, guard.cookie_value, secure=request.is_secure)
    if not guard.has_session():
        return _page_refused("Open the address `procorch dashboard` prints to sign in.")
    html = (UI / "index.html").read_text().replace(CSRF_PLACEHOLDER, guard.csrf_value)
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


def _page_refused(why: str) -> Response:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>procorch</title>"
        f"<h1>procorch dashboard</h1><p>{why}</p></html>"
    )
    return Response(body, 401, mimetype="text/html")


@bp.get("/ui/static/<path:name>")
def asset(name: str) -> ResponseReturnValue:
    return send_from_directory(UI, name, max_age=3600)


# -- what the pages poll -----------------------------------------------------------------


def _since() -> float | None:
    """`since`: the time of the newest point of the history a page holds (see live.py)."""
    raw = request.args.get("since")
    if raw is None or raw == "":
        return None
    try:
        since = float(raw)
    except ValueError:
        fail(400, f"`since` must be a time in seconds, got {short(raw)!r}")
    if not math.isfinite(since):
        fail(400, "`since` must be a finite number")
    return since


def _history(entry: dict[str, Any], key: str, view: LiveView) -> dict[str, Any]:
    """`entry` (carrying its series' newest point) with the series whole, unless the page
    holds all of it but that point."""
    series = view.history(key, _since())
    return entry if series is None else {**entry, "series": series}


@bp.get("/api/overview")
def overview() -> ResponseReturnValue:
    response = Response(live().body(_since()), mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/services/<name>")
def service(name: str) -> ResponseReturnValue:
    entry = _service_entry(name)
    entry = _history(entry, entry["name"], live())
    events = [
        e
        for e in _events_back(EVENTS_SCANNED)
        if e.get("service") == entry["name"] or "service" not in e
    ]
    return respond({"service": entry, "events": events[-EVENTS_SHOWN:]})


@bp.get("/api/services/<name>/log")
def service_log(name: str) -> ResponseReturnValue:
    # the query first, all of it: a bad one is a 400 whatever the name, and never ignored
    replica = query_int("replica", 0)
    after = _offset()
    count = _bounded("lines", 200)
    entry = _service_entry(name)
    if replica not in {r["replica"] for r in entry["replicas"]}:
        fail(404, f"{entry['name']} has no replica {replica}")
    path = RunDir(backend().run_dir).log_path(entry["name"], replica)
    if after is not None:
        raw, offset = lines_since(path, after)
        lines = [split_stamp(line)[1] for line in raw]
    else:
        offset = size_of(path)  # read back from here: what comes after, the next poll reads
        lines = [text for _, text in read_lines(path, count, upto=offset)]
    return respond({"lines": lines, "offset": offset})


@bp.get("/api/events")
def events() -> ResponseReturnValue:
    """The last `limit` events (of one service and kind, if asked), or every one after
    the offset `after`; `kinds`, those of the events read."""
    service_name = request.args.get("service") or None
    kind = request.args.get("kind") or None
    path = RunDir(backend().run_dir).events_file
    after = _offset()
    limit = _bounded("limit", 200)
    filtered = service_name is not None or kind is not None
    if after is not None:
        raw, offset = lines_since(path, after)
        found = _parsed(raw)
    else:
        offset = size_of(path)
        # filtered, the last `limit` that match are among more lines than `limit`
        back = EVENTS_SCANNED if filtered else limit
        found = _parsed(text for _, text in read_lines(path, back, upto=offset))
    kinds = sorted({e["event"] for e in found})
    shown = [
        e
        for e in found
        if (service_name is None or e.get("service") == service_name)
        and (kind is None or e["event"] == kind)
    ]
    return respond({"events": shown[-limit:], "offset": offset, "kinds": kinds})


@bp.get("/api/jobs/overview")
def jobs_overview() -> ResponseReturnValue:
    from procorch.jobs.scheduler import listing

    view = live()
    config = backend().config
    jobs = view.data["jobs"] if view.data else None
    if jobs is None:
        fail(503, "the job store does not answer")
    jobs = _history(jobs, "jobs", view)
    return respond(
        {**jobs, "schedules": listing(config, time.time()), "backend": config.jobs.backend}
    )


@bp.get("/api/jobs")
def jobs_page() -> ResponseReturnValue:
    return list_jobs()


@bp.get("/api/jobs/<raw>")
def job(raw: str) -> ResponseReturnValue:
    return respond(backend().job(job_id_of(raw)))


# -- helpers -----------------------------------------------------------------------------


def _service_entry(name: str) -> dict[str, Any]:
    entry = live().service(name)
    if entry is None:
        fail(404, f"no service named {short(name)!r}")
    return entry


def _offset() -> int | None:
    """`after`: a byte offset in a file, from an earlier answer's `offset`."""
    after = query_int("after")
    if after is not None and not 0 <= after <= MAX_INT64:
        fail(400, f"`after` must be between 0 and {MAX_INT64}")
    return after


def _bounded(name: str, default: int) -> int:
    value = query_int(name, default)
    assert value is not None
    if not 1 <= value <= MAX_LINES:
        fail(400, f"`{name}` must be between 1 and {MAX_LINES}")
    return value


def _events_back(count: int) -> list[dict[str, Any]]:
    path = RunDir(backend().run_dir).events_file
    return _parsed(text for _, text in read_lines(path, count))


def _parsed(lines: Any) -> list[dict[str, Any]]:
    """The events of event-log lines; a line cut short by a crash is skipped."""
    found = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            found.append(event)
    return found
