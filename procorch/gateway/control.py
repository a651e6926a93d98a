"""The control API: what the dashboard's buttons do, for programs too (as supervisord's
XML-RPC). Each endpoint is one request to the daemon over its control socket, the one
the CLI uses, answered once the change has settled:

    POST /api/services/<name>/start | stop | restart {"rolling"}   (name or name.N)
    POST /api/services/<name>/scale {"replicas"}
    POST /api/services/<name>/signal {"signal", "group"}
    POST /api/reload {"dry_run"}         the daemon's config file, read again (as SIGHUP)
    POST /api/jobs/<id>/cancel | requeue

They always need the control token (`session.Access`), and from a browser the page's
CSRF token. A request to the gateway's own service is sent without waiting: the answer
would have to come from the process being replaced.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from procorch.config import GATEWAY_NAME
from procorch.gateway.http import ApiError, fail, json_body, respond, short
from procorch.gateway.jobs import job_id_of
from procorch.gateway.live import replica_entry
from procorch.gateway.system import backend
from procorch.supervisor import control
from procorch.supervisor.rundir import RunDir

bp = Blueprint("control", __name__)

CHANGE_TIMEOUT = 300.0  # seconds a change may take to settle (a rolling restart of many)
ACTIONS = ("start", "stop", "restart")
MAX_REPLICAS = 1000


def ask(message: dict[str, Any]) -> dict[str, Any]:
    """The daemon's answer to `message`; its refusal as an HTTP error: 404 for a name it
    does not know, 409 for a change it refuses now, 400 for anything else it refuses."""
    socket = RunDir(backend().run_dir).socket
    try:
        return control.request(socket, message, timeout=CHANGE_TIMEOUT)
    except control.DaemonNotRunning:
        fail(503, "the supervisor daemon does not answer")
    except TimeoutError:
        fail(504, f"the change did not settle within {CHANGE_TIMEOUT:g} s: see the events")
    except control.ControlError as exc:
        raise ApiError(_status(exc), str(exc)) from None


def _status(exc: control.ControlError) -> int:
    if str(exc).startswith("no service named"):
        return 404
    if exc.reply.get("refused") or "shutting down" in str(exc):
        return 409
    return 400


def _body(**kinds: type) -> dict[str, Any]:
    """The request's JSON object (an empty body is `{}`), with only the fields named,
    each of its kind if given."""
    if not request.get_data(cache=True).strip():
        return {}
    body = json_body()
    unknown = sorted(set(body) - set(kinds))
    if unknown:
        fail(400, f"unknown field {short(repr(unknown[0]))} (known: {', '.join(kinds)})")
    for name, kind in kinds.items():
        value = body.get(name)
        if value is not None and not _is_kind(value, kind):
            fail(400, f"`{name}` must be {_KIND_WORDS[kind]}")
    return body


_KIND_WORDS = {bool: "true or false", int: "an integer", str: "a string"}


def _is_kind(value: Any, kind: type) -> bool:
    # JSON's true is no integer, though Python's bool is an int
    if kind is bool:
        return isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)


def _settled(name: str, reply: dict[str, Any]) -> ResponseReturnValue:
    replicas = [replica_entry(r) for r in reply.get("services", [])]
    return respond({"status": "success", "service": name, "replicas": replicas})


def _is_gateway(name: str) -> bool:
    return name.partition(".")[0].lower() == GATEWAY_NAME.lower()


@bp.post("/api/services/<name>/<action>")
def act(name: str, action: str) -> ResponseReturnValue:
    if action not in ACTIONS:
        fail(404, f"no such action: {short(action)} (one of {', '.join(ACTIONS)}, scale, signal)")
    body = _body(rolling=bool) if action == "restart" else _body()
    message = {"cmd": action, "names": [name], "rolling": bool(body.get("rolling"))}
    if _is_gateway(name):
        ask({**message, "wait": False})
        return respond({"status": "success", "service": name, "pending": True}, 202)
    return _settled(name, ask(message))


@bp.post("/api/services/<name>/scale")
def scale(name: str) -> ResponseReturnValue:
    body = _body(replicas=int)
    count = body.get("replicas")
    if count is None:
        fail(400, "`replicas` is required")
    if not 1 <= count <= MAX_REPLICAS:
        fail(400, f"`replicas` must be between 1 and {MAX_REPLICAS}")
    reply = ask({"cmd": "scale", "counts": {name: count}})
    return _settled(name, reply)


@bp.post("/api/services/<name>/signal")
def send_signal(name: str) -> ResponseReturnValue:
    body = _body(signal=str, group=bool)
    if body.get("signal") is None:
        fail(400, "`signal` is required (a name like TERM, or a number)")
    group = bool(body.get("group"))
    reply = ask({"cmd": "signal", "names": [name], "signal": body["signal"], "group": group})
    return respond({"status": "success", "signal": reply["signal"], "results": reply["results"]})


@bp.post("/api/reload")
def reload() -> ResponseReturnValue:
    body = _body(dry_run=bool)
    reply = ask({"cmd": "reload", "dry_run": bool(body.get("dry_run"))})
    return respond({"status": "success", "plan": reply["plan"], "applied": reply["applied"]})


@bp.post("/api/jobs/<raw>/cancel")
def cancel_job(raw: str) -> ResponseReturnValue:
    _body()
    job = backend().jobs.cancel(job_id_of(raw))
    return respond({"status": "success", "job": job})


@bp.post("/api/jobs/<raw>/requeue")
def requeue_job(raw: str) -> ResponseReturnValue:
    _body()
    jobs = backend().jobs
    (job_id,) = jobs.requeue(job_id_of(raw))
    return respond({"status": "success", "job": jobs.get(job_id)})
