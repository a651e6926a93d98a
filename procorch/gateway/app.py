"""The Flask app factory: routes, bearer-token authentication, and JSON for every error.

    app = create_app(config)   # a procorch Config; `service.Gateway` serves it on waitress

Whatever goes wrong answers JSON (`http.ApiError`): a refused service call gets the
status its error code maps to, a job error 400/404/409, an unknown route 404, a wrong
method 405, a body over `max_body` 413, and a bug 500 without its traceback (which goes
to the gateway's log).

Who may call what is `session.Access`'s: the originals' API needs `[gateway] token` if
one is set (with `token = "auto"`, the one kept in the run directory, `token.py`), and is
open to any local user without one (the originals' curl workflow, and `procorch up` says
so); the dashboard and the control API (`/ui`, `/api/...`) always need a token, since on
a shared machine "local" is not "mine".
"""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from procorch.config import Config
from procorch.gateway import token as auto_token
from procorch.gateway.backend import Backend
from procorch.gateway.http import CODES, ApiError, IntegerConverter, error_response, short
from procorch.gateway.session import Access
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


def create_app(config: Config) -> Flask:
    from procorch.gateway import control, dashboard, jobs, metrics, openapi, records, system

    app = Flask("procorch.gateway")
    app.config["MAX_CONTENT_LENGTH"] = config.gateway.max_body
    app.url_map.converters["int"] = IntegerConverter  # every route's <int:...>: see there
    app.extensions["procorch"] = Backend(config)
    for module in (system, records, jobs, metrics, openapi, dashboard, control):
        app.register_blueprint(module.bp)
    run_dir = config.settings.run_dir
    api_token = auto_token.resolve(config.gateway, run_dir)
    access = Access(api_token, api_token or auto_token.load_or_create(run_dir))
    app.extensions["procorch.access"] = access
    app.before_request(access.check)
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(ServiceError, lambda e: error_response(ApiError.from_service(e)))
    app.register_error_handler(JobError, lambda e: error_response(_job_error(e)))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _bug)
    return app


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
