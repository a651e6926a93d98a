"""The Flask app factory: routes, bearer-token authentication, and JSON for every error.

    app = create_app(config)   # a procorch Config; `service.Gateway` serves it on waitress

Whatever goes wrong answers JSON (`http.ApiError`): a refused service call gets the
status its error code maps to, a job error 400/404/409, an unknown route 404, a wrong
method 405, a body over `max_body` 413, and a bug 500 without its traceback (which goes
to the gateway's log).

The token: `[gateway] token`, or with `token = "auto"` the one kept in the run directory
(`token.py`). Without one, the gateway serves any local user (the originals' curl
workflow, and `procorch up` says so); an endpoint that controls processes (restart,
stop, scale, reload; marked `@controls_processes`) is refused then with 403 whatever the
host, since on a shared machine "local" is not "mine".
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from procorch.config import Config
from procorch.gateway import token as auto_token
from procorch.gateway.backend import Backend
from procorch.gateway.http import CODES, ApiError, IntegerConverter, error_response, short
from procorch.jobs.job import (
    InvalidJob,
    JobConflict,
    JobError,
    JobNotFound,
    JobTimeout,
    StoreFull,
    StoreUnavailable,
)
from procorch.services.protocol import ServiceError

log = logging.getLogger("procorch.gateway")

OPEN_PATHS = frozenset({"/health"})  # answered without the token: for load balancers and probes
View = Callable[..., Any]


def create_app(config: Config) -> Flask:
    from procorch.gateway import jobs, metrics, openapi, records, system

    app = Flask("procorch.gateway")
    app.config["MAX_CONTENT_LENGTH"] = config.gateway.max_body
    app.url_map.converters["int"] = IntegerConverter  # every route's <int:...>: see there
    app.extensions["procorch"] = Backend(config)
    for module in (system, records, jobs, metrics, openapi):
        app.register_blueprint(module.bp)
    token = auto_token.resolve(config.gateway, config.settings.run_dir)
    if token:
        app.before_request(_bearer_check(token))
    _guard_control(app, token)
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(ServiceError, lambda e: error_response(ApiError.from_service(e)))
    app.register_error_handler(JobError, lambda e: error_response(_job_error(e)))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _bug)
    return app


def _bearer_check(token: str) -> Callable[[], Response | None]:
    """A before_request hook refusing, with 401, a request without `Bearer <token>`."""
    expected = token.encode()

    def check() -> Response | None:
        if request.path in OPEN_PATHS:
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # the scheme's name ignores case (RFC 9110); the token is compared in constant time
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
            return None
        response = error_response(ApiError(401, "a valid bearer token is required"))
        response.headers["WWW-Authenticate"] = 'Bearer realm="procorch"'
        return response

    return check


def controls_processes(view: View) -> View:
    """Mark an endpoint that starts, stops or changes processes (restart, stop, scale,
    reload): without a token, `create_app` puts a 403 in its place (`control_refusal`)."""
    view.controls_processes = True  # type: ignore[attr-defined]
    return view


def control_refusal(token: str | None) -> ApiError | None:
    """Why a process-controlling endpoint is refused, or None if it may run: it needs a
    token, even on loopback, where any local user could otherwise restart your services."""
    if token:
        return None
    return ApiError(
        403,
        "controlling processes needs a gateway token: `procorch up --gateway --token`",
    )


def _guard_control(app: Flask, token: str | None) -> None:
    """Replace every marked view by its refusal, once, here: nothing on the request path."""
    refusal = control_refusal(token)
    if refusal is None:
        return
    for endpoint, view in list(app.view_functions.items()):
        if getattr(view, "controls_processes", False):
            app.view_functions[endpoint] = _refuse(refusal)


def _refuse(refusal: ApiError) -> View:
    def refused(**_: Any) -> Response:
        raise refusal

    return refused


# A job error's HTTP status, by its class (the first that matches); anything else is 500.
JOB_STATUS: tuple[tuple[type[JobError], int], ...] = (
    (JobNotFound, 404),
    (InvalidJob, 400),
    (JobConflict, 409),  # cancelling a job that has finished
    (StoreFull, 507),  # before its base class: the first match wins
    (StoreUnavailable, 503),
    (JobTimeout, 504),
)


def _job_error(exc: JobError) -> ApiError:
    status = next((status for cls, status in JOB_STATUS if isinstance(exc, cls)), 500)
    return ApiError(status, str(exc))


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    # the gateway's word for the status (400 `invalid`, as the services say it), else
    # werkzeug's name for it (`method_not_allowed`)
    code = CODES.get(status) or (exc.name or "error").lower().replace(" ", "_")
    message = exc.description or exc.name
    path = short(request.path, 100)  # a path may be megabytes long
    if status == 404:
        message = f"no such endpoint: {request.method} {path}"
    elif status == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or ()))
        message = f"{request.method} is not allowed on {path} (allowed: {allowed})"
    elif status == 413:
        message = f"the request body is larger than {request.max_content_length} bytes"
    response = error_response(ApiError(status, message, code))
    for name, value in exc.get_headers():  # e.g. Allow, which a 405 must carry
        if name != "Content-Type":
            response.headers[name] = value
    return response


def _bug(exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(ApiError(500, f"internal error ({type(exc).__name__})"))
