"""The job queue over HTTP: the first original's endpoints and a paginated list.

    POST /jobs {"function", "args", "kwargs", "delay", "at", "priority", "queue",
                "depends_on"}   enqueue a registered function's job -> {"status": "taken", ...}
    POST /job/<n>[?mod=M]   enqueue F(n) mod M       -> {"status": "taken", "job_id": 1}
    GET  /job/<id>          the job
    DELETE /job/<id>        cancel it (409 once it has finished)
    GET  /jobs?status=&function=&queue=&limit=&offset=   a page of jobs
    GET  /list-all                      every job, as the original listed them
    POST /process {"n"}, GET /info?id=, GET /all: the original worker's own endpoints

Jobs go straight to the store (SQLite or Redis), like `procorch job`: no service hop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from procorch.gateway.http import (
    fail,
    idempotency_key,
    integer_text,
    integral,
    json_body,
    query_int,
    respond,
    short,
)
from procorch.gateway.system import backend
from procorch.jobs.api import MAX_LIMIT, Jobs
from procorch.jobs.job import DEFAULT_FUNCTION
from procorch.services.fields import MAX_INTEGER
from procorch.services.protocol import dumps

bp = Blueprint("jobs", __name__)

LIST_ALL_BATCH = MAX_LIMIT  # jobs /list-all reads from the store, and holds, at a time


SUBMIT_OPTIONS = ("args", "kwargs", "delay", "at", "priority", "queue", "depends_on")


def _taken(n: Any, mod: Any) -> ResponseReturnValue:
    # with an Idempotency-Key, a retry gets the first submission's id (the key is stored
    # with the job, in its transaction); the key with another n or mod is 409
    job_id = backend().jobs.submit_many([n], mod, key=idempotency_key())[0]
    return respond({"status": "taken", "job_id": job_id})


def job_id_of(raw: Any) -> int:
    """A job id from a path or a query: anything but a positive integer names no job;
    an integer past the largest id is out of range (400), as a user's or an order's."""
    text = str(raw).strip()  # raw: from /info's body, any JSON value
    if not (text.isascii() and text.isdigit()):
        fail(404, f"no job with id {short(repr(raw))}")
    job_id = integer_text(text, "id")
    if job_id > MAX_INTEGER:
        fail(400, f"`id` is out of range: it must be at most {MAX_INTEGER}")
    if job_id < 1:
        fail(404, f"no job with id {raw!r}")
    return job_id


@bp.route("/job/<raw>", methods=["GET", "POST", "DELETE"])
def job(raw: str) -> ResponseReturnValue:
    if request.method == "POST":
        mod = request.args.get("mod")
        return _taken(integer_text(raw, "n"), None if mod is None else integer_text(mod, "mod"))
    job_id = job_id_of(raw)
    if request.method == "DELETE":
        cancelled = backend().jobs.cancel(job_id)
        return respond(
            {"status": "success", "message": f"job {job_id} cancelled", "job": cancelled}
        )
    return respond(backend().job(job_id))


@bp.post("/jobs")
def submit_job() -> ResponseReturnValue:
    """A job of any registered function; the body names it, never code."""
    body = json_body("function")
    unknown = sorted(set(body) - {"function", *SUBMIT_OPTIONS})
    if unknown:
        known = ", ".join(("function", *SUBMIT_OPTIONS))
        fail(400, f"unknown field {short(repr(unknown[0]))} (known: {known})")
    if not isinstance(body["function"], str):
        got = short(repr(body["function"]))
        fail(400, f"`function` must be a registered function's name, got {got}")
    options = {name: body.get(name) for name in SUBMIT_OPTIONS}
    given_null = [name for name in SUBMIT_OPTIONS if name in body and body[name] is None]
    if given_null:  # not the same as leaving it out: say so rather than guess
        fail(400, f"`{given_null[0]}` must not be null (leave it out for the default)")
    # integers where integers are meant (JSON's 2.0 is the document's integer 2); any
    # other function's arguments are its own, passed on as they came
    for name in ("args", "depends_on") if body["function"] == DEFAULT_FUNCTION else ("depends_on",):
        if isinstance(options[name], list):
            options[name] = [integral(item) for item in options[name]]
    job_id = backend().jobs.submit(function=body["function"], key=idempotency_key(), **options)
    return respond({"status": "taken", "job_id": job_id})


@bp.get("/jobs")
def list_jobs() -> ResponseReturnValue:
    limit = query_int("limit", 50)
    offset = query_int("offset", 0)
    filters = {name: request.args.get(name) or None for name in ("function", "queue")}
    page = backend().jobs.list(request.args.get("status") or None, limit, offset, **filters)
    return respond({"status": "success", **page, "limit": limit, "offset": offset})


@bp.get("/list-all")
@bp.get("/all")
def list_all() -> ResponseReturnValue:
    """Every job, by id: `{"status": "success", "jobs": [...], "count": C, "total": C}`.

    There may be millions: the answer is streamed (chunked), a batch of jobs read from
    the store at a time, never all of them in memory. The first batch is read before
    answering, so that an unreachable store is still a 503; a store lost mid-answer cuts
    it short, which a client sees as JSON that does not end."""
    jobs = backend().jobs
    first = jobs.list(None, LIST_ALL_BATCH, 0)["jobs"]
    return Response(_every_job(jobs, first), mimetype="application/json")


def _every_job(jobs: Jobs, batch: list[dict[str, Any]]) -> Iterator[bytes]:
    """The JSON of /list-all in pieces, from `batch` (the first) on.

    Pages by offset: job ids only grow, so a job submitted meanwhile can only join the
    end, and none is listed twice (a job purged meanwhile may let one be skipped)."""
    yield b'{"status":"success","jobs":['
    count = 0
    while batch:
        yield (b"," if count else b"") + b",".join(map(dumps, batch))
        count += len(batch)
        if len(batch) < LIST_ALL_BATCH:
            break
        batch = jobs.list(None, LIST_ALL_BATCH, count)["jobs"]
    yield b'],"count":%d,"total":%d}' % (count, count)


@bp.post("/process")
def process() -> ResponseReturnValue:
    body = json_body("n")
    return _taken(body["n"], body.get("mod"))


@bp.get("/info")
def info() -> ResponseReturnValue:
    raw = request.args.get("id")
    if raw is None and request.content_length:  # the original took {"id": ...} in the body
        raw = json_body("id")["id"]
    if raw is None:
        fail(400, "`id` is required (GET /info?id=1)")
    return respond(backend().job(job_id_of(raw)))
