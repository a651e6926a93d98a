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

import signal
from typing import Any

from flask import Blueprint, current_app, request
from flask.typing import ResponseReturnValue

from procorch.config import GATEWAY_NAME
from procorch.gateway.http import ApiError, fail, json_body, respond
from procorch.gateway.jobs import job_id_of
from procorch.gateway.live import replica_entry
from procorch.gateway.system import backend
from procorch.services.bodies import Body, Boolean, Choice, Integer
from procorch.supervisor import control
from procorch.supervisor.rundir import RunDir

bp = Blueprint("control", __name__)

CHANGE_TIMEOUT = 300.0  # seconds a change may take to settle (a rolling restart of many)
ACTIONS = ("start", "stop", "restart")
MAX_REPLICAS = 1000
# The signals a service may be sent by name (lower case, as `Choice` compares them)
SIGNALS = tuple(sorted(s.name[3:].lower() for s in signal.Signals if s.name.isalnum()))

# The request bodies, declared once: checked here, described in /openapi.json
NOTHING = Body(closed=True)
RESTART = Body(Boolean("rolling", default=False), closed=True)
SCALE = Body(Integer("replicas", minimum=1, maximum=MAX_REPLICAS), closed=True)
SIGNAL = Body(Choice("signal", SIGNALS), Boolean("group", default=False), closed=True)
RELOAD = Body(Boolean("dry_run", default=False), closed=True)
BODIES = {"Restart": RESTART, "Scale": SCALE, "Signal": SIGNAL, "Reload": RELOAD}


def ask(message: dict[str, Any]) -> dict[str, Any]:
    """The daemon's answer to `message`; its refusal as an HTTP error: 404 for a name it
    does not know, 409 for a change it refuses now, 400 for anything else it refuses."""
    socket = RunDir(backend().run_dir).socket
    try:
        answer = control.request(socket, message, timeout=CHANGE_TIMEOUT)
    except control.DaemonNotRunning:
        fail(503, "the supervisor daemon does not answer")
    except TimeoutError:
        fail(504, f"the change did not settle within {CHANGE_TIMEOUT:g} s: see the events")
    except control.ControlError as exc:
        raise ApiError(_status(exc), str(exc)) from None
    if view := current_app.extensions.get("procorch.live"):
        view.expire()
    return answer


def _status(exc: control.ControlError) -> int:
    if exc.reply.get("unknown"):  # a name the daemon does not know
        return 404
    if exc.reply.get("refused"):  # a change it will not make now (or shutting down)
        return 409
    return 400


def _body(body: Body) -> dict[str, Any]:
    """The request's JSON object checked against `body` (an empty request body is `{}`);
    a field it does not declare, or one of the wrong kind, is a 400 (`Invalid`)."""
    if not request.get_data(cache=True).strip():
        return body.check({})
    return body.check(json_body())


def _settled(name: str, reply: dict[str, Any]) -> ResponseReturnValue:
    replicas = [replica_entry(r) for r in reply.get("services", [])]
    return respond({"status": "success", "service": name, "replicas": replicas})


def _is_gateway(name: str) -> bool:
    return name.partition(".")[0].lower() == GATEWAY_NAME.lower()


@bp.post(f"/api/services/<name>/<any({', '.join(ACTIONS)}):action>")
def act(name: str, action: str) -> ResponseReturnValue:
    body = _body(RESTART if action == "restart" else NOTHING)
    message = {"cmd": action, "names": [name], "rolling": body.get("rolling", False)}
    if _is_gateway(name):
        ask({**message, "wait": False})
        return respond({"status": "success", "service": name, "pending": True}, 202)
    return _settled(name, ask(message))


@bp.post("/api/services/<name>/scale")
def scale(name: str) -> ResponseReturnValue:
    count = _body(SCALE)["replicas"]
    reply = ask({"cmd": "scale", "counts": {name: count}})
    return _settled(name, reply)


@bp.post("/api/services/<name>/signal")
def send_signal(name: str) -> ResponseReturnValue:
    body = _body(SIGNAL)
    message = {"cmd": "signal", "names": [name], "signal": body["signal"].upper()}
    reply = ask({**message, "group": body["group"]})
    return respond({"status": "success", "signal": reply["signal"], "results": reply["results"]})


@bp.post("/api/reload")
def reload() -> ResponseReturnValue:
    reply = ask({"cmd": "reload", "dry_run": _body(RELOAD)["dry_run"]})
    return respond({"status": "success", "plan": reply["plan"], "applied": reply["applied"]})


@bp.post("/api/jobs/<raw>/cancel")
def cancel_job(raw: str) -> ResponseReturnValue:
    _body(NOTHING)
    job = backend().jobs.cancel(job_id_of(raw))
    return respond({"status": "success", "job": job})


@bp.post("/api/jobs/<raw>/requeue")
def requeue_job(raw: str) -> ResponseReturnValue:
    _body(NOTHING)
    jobs = backend().jobs
    (job_id,) = jobs.requeue(job_id_of(raw))
    return respond({"status": "success", "job": jobs.get(job_id)})
