"""GET /openapi.json: an OpenAPI 3.1 document of every endpoint, built from the config.

The limits in it are the ones the gateway enforces (`max_n`, page sizes, field
lengths: the data services' bodies and list queries are made from the declarations their
checks are made from, in `procorch.services.bodies`), and the bearer scheme is there only
when a token is configured, so the document describes this gateway exactly; the tests run
schemathesis against it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue

from procorch import __version__
from procorch.config import MAX_INT64, MAX_PRIORITY, QUEUE_NAME, Config
from procorch.gateway.dashboard import MAX_LINES
from procorch.gateway.http import IDEMPOTENCY_KEY, respond
from procorch.gateway.system import TITLE
from procorch.jobs.api import LATEST, MAX_DELAY, MAX_LIMIT
from procorch.jobs.job import Status
from procorch.services.bodies import BY_USER, NEW_NOTIFICATION, NEW_ORDER, NEW_USER, PAGE, Body
from procorch.services.protocol import MAX_KEY
from procorch.supervisor.state import ProcessState

bp = Blueprint("openapi", __name__)

MAX_ID = MAX_INT64
REASONS = {
    400: "Bad request: the body, a field or a parameter is invalid",
    401: "The bearer token is missing or wrong",
    404: "No such record (or route)",
    # any operation: the client did not send the whole request within `request_deadline`
    408: "The request was not complete within the gateway's deadline",
    409: "Conflicts with what exists (or the Idempotency-Key was used with another body)",
    413: "The request body is over `max_body`",
    403: "A browser's request that changes something without the page's CSRF token, or"
    " from another site",
    503: "The service (or job store, or the supervisor daemon) behind the endpoint is down,"
    " or busy or hung (holding its share of the gateway's threads)",
    507: "The job store is full: its disk (or Redis's maxmemory) has no room",
    504: "The service behind the endpoint (or a change the daemon makes) did not answer"
    " (or settle) in time",
}


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return respond(document(current_app.extensions["procorch"].config))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _int(minimum: int = 0, maximum: int = MAX_ID, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


_QUEUE = {"type": "string", "pattern": f"^{QUEUE_NAME.pattern}$"}
_NULLABLE_TEXT = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}


def _schemas(config: Config) -> dict[str, Any]:
    page = {"count": {"type": "integer"}, "total": {"type": "integer"}}
    success = {"type": "string", "enum": ["success"]}
    return _record_schemas(config, page, success) | _dashboard_schemas(success)


def _dashboard_schemas(success: dict[str, Any]) -> dict[str, Any]:
    """The answers of the dashboard's and the control API's endpoints, and the control
    requests' bodies (declared once, in `control`)."""
    from procorch.gateway.control import BODIES

    lines = {"type": "array", "items": {"type": "string"}}
    events = {"type": "array", "items": {"type": "object"}}
    replicas = {"type": "array", "items": _ref("DashboardReplica")}
    return {
        "DashboardReplica": _obj(
            ["replica", "state", "pid", "restarts"],
            replica={"type": "integer"},
            state={"type": "string", "enum": [s.value for s in ProcessState]},
            pid=_NULLABLE_INT,
            uptime={"type": ["number", "null"]},
            restarts={"type": "integer"},
            cpu_percent={"type": ["number", "null"]},
            rss_bytes=_NULLABLE_INT,
            heartbeat_age={"type": ["number", "null"]},
            requests={"type": "integer"},
            errors={"type": "integer"},
            last_exit=_NULLABLE_TEXT,
        ),
        "DashboardService": _obj(
            ["name", "state", "health", "replicas", "series"],
            name={"type": "string"},
            state={"type": "string"},
            health={"type": "string", "enum": ["healthy", "unhealthy", "dead"]},
            replicas=replicas,
            series={"type": "object"},
        ),
        "Overview": _obj(
            ["time", "daemon", "warnings", "services", "jobs"],
            time={"type": "number"},
            daemon={"type": "object"},
            warnings={"type": "array", "items": {"type": "object"}},
            services={"type": "array", "items": _ref("DashboardService")},
            jobs={"type": ["object", "null"]},
        ),
        "ServicePage": _obj(["service", "events"], service=_ref("DashboardService"), events=events),
        "LogTail": _obj(["lines", "offset"], lines=lines, offset={"type": "integer"}),
        "Events": _obj(
            ["events", "offset", "kinds"], events=events, offset={"type": "integer"}, kinds=lines
        ),
        "JobsOverview": _obj(
            ["counts", "total", "durations", "series", "schedules", "backend"],
            counts={"type": "object"},
            total={"type": "integer"},
            throughput={"type": "object"},
            durations={"type": "object"},
            series={"type": "object"},
            schedules={"type": "array", "items": {"type": "object"}},
            backend={"type": "string"},
        ),
        "Changed": _obj(
            ["status", "service"],
            status=success,
            service={"type": "string"},
            replicas=replicas,
            pending={"type": "boolean"},
        ),
        "Signalled": _obj(
            ["status", "signal", "results"],
            status=success,
            signal={"type": "string"},
            results={"type": "array", "items": {"type": "object"}},
        ),
        "Reloaded": _obj(
            ["status", "plan", "applied"],
            status=success,
            plan={"type": "object"},
            applied={"type": "boolean"},
        ),
        "JobChanged": _obj(["status", "job"], status=success, job=_ref("Job")),
        **{name: body.schema() for name, body in BODIES.items()},
    }


def _record_schemas(
    config: Config, page: dict[str, Any], success: dict[str, Any]
) -> dict[str, Any]:

    def listing(key: str, item: str) -> dict[str, Any]:
        items = {"type": "array", "items": _ref(item)}
        return _obj(["status", key, "count"], status=success, **{key: items}, **page)

    def one(key: str, item: str, message: bool = False) -> dict[str, Any]:
        extra = {"message": {"type": "string"}} if message else {}
        return _obj(["status", key], status=success, **{key: _ref(item)}, **extra)

    replica = _obj(
        ["replica", "pid", "status"],
        replica={"type": "integer"},
        pid=_NULLABLE_INT,
        status={"type": "string"},
        registered_at=_NULLABLE_TEXT,
        requests={"type": "integer"},
        errors={"type": "integer"},
        last_heartbeat={"type": ["number", "null"]},
    )
    stats = _obj(
        ["requests", "last_heartbeat"],
        requests={"type": "integer"},
        errors={"type": "integer"},
        started_at=_NULLABLE_TEXT,
        last_heartbeat={"type": ["number", "null"]},
    )
    health_word = {"type": "string", "enum": ["healthy", "unhealthy", "dead"]}
    return {
        "Error": _obj(
            ["status", "message"],
            status={"type": "string", "enum": ["error"]},
            message={"type": "string"},
            code={"type": "string"},
        ),
        "User": _obj(
            ["id", "username", "email"],
            id=_int(1),
            username={"type": "string"},
            email={"type": "string"},
            created_at={"type": "string"},
        ),
        # the request bodies, with the limits the services check (declared in `bodies`)
        "NewUser": NEW_USER.schema(),
        "Order": _obj(
            ["id", "user_id", "product", "quantity", "status"],
            id=_int(1),
            user_id=_int(1),
            product={"type": "string"},
            quantity=_int(1),
            status={"type": "string"},
            created_at={"type": "string"},
        ),
        "NewOrder": NEW_ORDER.schema(),
        "Notification": _obj(
            ["id", "user_id", "message", "type", "status"],
            id=_int(1),
            user_id=_int(1),
            message={"type": "string"},
            type={"type": "string"},
            status={"type": "string", "enum": ["queued", "sending", "sent"]},
            order_id=_NULLABLE_INT,
            created_at={"type": "string"},
            sent_at=_NULLABLE_TEXT,
        ),
        "NewNotification": NEW_NOTIFICATION.schema(),
        "Job": _obj(
            ["job_id", "status", "input", "output", "init_time", "finished_time", "mod"],
            job_id=_int(1),
            status={"type": "string", "enum": [s.value for s in Status]},
            function={"type": "string"},
            args={"type": "array"},
            kwargs={"type": "object"},
            # the Fibonacci-shaped jobs' n, m and result; null for any other job
            input={**_int(0), "type": ["integer", "null"]},
            mod={**_int(2), "type": ["integer", "null"]},
            result={},  # any JSON value
            output=_NULLABLE_INT,
            error=_NULLABLE_TEXT,
            errors={
                "type": "array",
                "items": _obj(
                    ["attempt", "error", "at"],
                    attempt={"type": "integer"},
                    error={"type": "string"},
                    at={"type": "number"},
                ),
            },
            progress={"type": ["number", "null"]},
            meta={},
            priority={"type": "integer"},
            queue={"type": "string"},
            depends_on={"type": "array", "items": _int(1)},
            attempts={"type": "integer"},
            run_at=_NULLABLE_TEXT,
            init_time={"type": "string"},
            started_time=_NULLABLE_TEXT,
            finished_time=_NULLABLE_TEXT,
            worker=_NULLABLE_TEXT,
        ),
        # a null `mod` is the config's, as if not given
        "NewJob": _obj(["n"], n=_int(0, config.jobs.max_n), mod=_int(2, type=["integer", "null"])),
        "NewFunctionJob": _function_job(config),
        "Taken": _obj(
            ["status", "job_id"], status={"type": "string", "enum": ["taken"]}, job_id=_int(1)
        ),
        "UserCreated": one("user", "User", message=True),
        "UserOne": one("user", "User"),
        "UserList": listing("users", "User"),
        "OrderCreated": one("order", "Order", message=True),
        "OrderOne": one("order", "Order"),
        "OrderList": listing("orders", "Order"),
        "NotificationSent": _obj(
            ["status", "message", "user_id"],
            status=success,
            message={"type": "string"},
            user_id=_int(1),
            notification=_ref("Notification"),
        ),
        "NotificationList": listing("notifications", "Notification"),
        "JobList": _obj(
            ["status", "jobs", "count", "total"],
            status=success,
            jobs={"type": "array", "items": _ref("Job")},
            limit={"type": "integer"},
            offset={"type": "integer"},
            **page,
        ),
        "AllJobs": _obj(
            ["status", "jobs", "count", "total"],
            status=success,
            jobs={"type": "array", "items": _ref("Job")},
            **page,
        ),
        "JobCancelled": one("job", "Job", message=True),
        "Index": _obj(
            ["message", "version", "endpoints"],
            message={"type": "string"},
            version={"type": "string"},
            endpoints={"type": "object", "additionalProperties": {"type": "string"}},
            docs={"type": "string"},
        ),
        "Health": _obj(
            ["status", "message", "dead"],
            # degraded: some service has no process at all; `dead` names them
            status={"type": "string", "enum": ["healthy", "degraded"]},
            message={"type": "string"},
            dead={"type": "array", "items": {"type": "string"}},
            version={"type": "string"},
            services={
                "type": "object",
                "additionalProperties": _obj(
                    ["status", "health"], status={"type": "string"}, health=health_word
                ),
            },
        ),
        "Services": _obj(
            ["status", "services", "count"],
            status=success,
            count={"type": "integer"},
            services={
                "type": "object",
                "additionalProperties": _obj(
                    ["pid", "status", "stats"],
                    pid=_NULLABLE_INT,
                    status={"type": "string"},
                    registered_at=_NULLABLE_TEXT,
                    stats=stats,
                    replicas={"type": "array", "items": replica},
                ),
            },
        ),
        "ServiceHealth": _obj(
            ["status", "service", "health", "stats"],
            status=success,
            service={"type": "string"},
            health=health_word,
            stats=stats,
        ),
    }


def _operation(
    summary: str,
    ok: str | None,
    errors: tuple[int, ...] = (),
    *,
    status: int = 200,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    media: str = "application/json",
) -> dict[str, Any]:
    plain = {"type": "object"} if media == "application/json" else {"type": "string"}
    content = {media: {"schema": _ref(ok) if ok else plain}}
    responses: dict[str, Any] = {str(status): {"description": "Success", "content": content}}
    for code in errors:
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    responses["408"] = {"$ref": "#/components/responses/E408"}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        responses.setdefault("400", {"$ref": "#/components/responses/E400"})
        responses["413"] = {"$ref": "#/components/responses/E413"}
    if params:
        op["parameters"] = params
        responses.setdefault("400", {"$ref": "#/components/responses/E400"})
    return op


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema}


# The key of a POST that creates something: visible ASCII, as `protocol.key_problem` says.
_IDEMPOTENCY = {
    **_param(
        IDEMPOTENCY_KEY,
        "header",
        {"type": "string", "pattern": f"^[!-~]{{1,{MAX_KEY}}}$", "maxLength": MAX_KEY},
    ),
    "description": "Sent again with the same key and body (after a lost answer, say), the"
    " request creates nothing more and gets the first answer; with another body, 409."
    " Keys are kept at least 24 hours.",
}


def _filter(name: str, schema: dict[str, Any]) -> dict:
    """An optional query parameter that, given empty (`?limit=`), counts as not given."""
    return {**_param(name, "query", schema), "allowEmptyValue": True}


def _query(body: Body) -> list[dict[str, Any]]:
    """The query parameters of a list action, each as the service checks it."""
    return [_filter(field.name, field.schema()) for field in body.fields]


def _function_job(config: Config) -> dict[str, Any]:
    """POST /jobs's body: any registered function with JSON arguments (1 MiB at most,
    with the rest); the built-in fib takes [n] or [n, mod] only."""
    from procorch.jobs.functions import Registry
    from procorch.jobs.job import DEFAULT_FUNCTION, JobError

    try:
        names = Registry(config.jobs, config.path and config.path.parent).names()
    except JobError:  # [jobs] modules do not import here: the config's names only
        names = [DEFAULT_FUNCTION, *config.jobs.functions]
    options = {
        "delay": {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_DELAY},
                {"type": "string", "pattern": r"^\d{1,6}(\.\d+)?(ms|s|m|h|d)?$"},
            ],
            "description": 'seconds, or "10s", "5m", "1h"',
        },
        "at": {
            "type": "number",
            "maximum": LATEST,
            "description": "epoch seconds (a past time: due now)",
        },
        "priority": _int(-MAX_PRIORITY, MAX_PRIORITY),
        "queue": _QUEUE,
        "depends_on": {"type": "array", "items": _int(1)},
    }
    fib = {
        **_obj(
            ["function", "args"],
            function={"const": DEFAULT_FUNCTION},
            args={
                "type": "array",
                "prefixItems": [_int(0, config.jobs.max_n), _int(2, MAX_INT64)],
                "minItems": 1,
                "maxItems": 2,
            },
            kwargs={"type": "object", "maxProperties": 0},
            **options,
        ),
        "additionalProperties": False,
    }
    variants = [fib]
    others = [name for name in dict.fromkeys(names) if name != DEFAULT_FUNCTION]
    if others:
        any_function = _obj(
            ["function"],
            function={"type": "string", "enum": others},
            args={"type": "array"},
            kwargs={"type": "object"},
            **options,
        )
        variants.append({**any_function, "additionalProperties": False})
    return {"oneOf": variants}


def _paths(config: Config) -> dict[str, Any]:
    page, by_user = _query(PAGE), _query(BY_USER)
    job_id = [_param("id", "path", _int(1))]
    service = (503, 504)
    store = (503, 507)  # the job store: unreachable, or full
    return {
        "/": {"get": _operation("What this API is and its main endpoints", "Index")},
        "/health": {
            "get": {
                **_operation("The gateway is up; each service's state", "Health"),
                "security": [],
            }
        },
        "/services": {"get": _operation("Every service: pids, state, statistics", "Services")},
        "/services/{name}/health": {
            "get": _operation(
                "One service's health",
                "ServiceHealth",
                (404,),
                params=[_param("name", "path", {"type": "string"})],
            )
        },
        "/users": {
            "post": _operation(
                "Create a user",
                "UserCreated",
                (409, *service),
                status=201,
                body="NewUser",
                params=[_IDEMPOTENCY],
            ),
            "get": _operation("List users", "UserList", service, params=page),
        },
        "/users/{user_id}": {
            "get": _operation(
                "One user", "UserOne", (404, *service), params=[_param("user_id", "path", _int(1))]
            )
        },
        "/orders": {
            "post": _operation(
                "Create an order (the user must exist)",
                "OrderCreated",
                (404, 409, *service),
                status=201,
                body="NewOrder",
                params=[_IDEMPOTENCY],
            ),
            "get": _operation("List orders", "OrderList", service, params=by_user),
        },
        "/orders/{order_id}": {
            "get": _operation(
                "One order",
                "OrderOne",
                (404, *service),
                params=[_param("order_id", "path", _int(1))],
            )
        },
        "/notifications": {
            "post": _operation(
                "Queue a notification (the user must exist)",
                "NotificationSent",
                (404, 409, *service),
                body="NewNotification",
                params=[_IDEMPOTENCY],
            ),
            "get": _operation("List notifications", "NotificationList", service, params=by_user),
        },
        "/job/{id}": {
            "post": _operation(
                "Enqueue F(id) mod `mod`: here `id` is n, the Fibonacci index",
                "Taken",
                (409, *store),
                params=[
                    _param("id", "path", _int(0, config.jobs.max_n)),
                    _param("mod", "query", _int(2)),
                    _IDEMPOTENCY,
                ],
            ),
            "get": _operation("One job", "Job", (404, *store), params=job_id),
            "delete": _operation(
                "Cancel a pending or running job",
                "JobCancelled",
                (404, 409, *store),
                params=job_id,
            ),
        },
        "/jobs": {
            "get": _operation(
                "List jobs, by id",
                "JobList",
                store,
                params=_job_filters(),
            ),
            "post": _operation(
                "Enqueue a job of a registered function, with JSON args and kwargs",
                "Taken",
                (404, 409, *store),  # 404: a job in depends_on that does not exist
                body="NewFunctionJob",
                params=[_IDEMPOTENCY],
            ),
        },
        "/list-all": {
            "get": _operation("Every job, by id (the original's list)", "AllJobs", store)
        },
        "/all": {
            "get": _operation("The same as /list-all (the original worker's)", "AllJobs", store)
        },
        "/process": {
            "post": _operation(
                "Enqueue a job (the original worker's)",
                "Taken",
                (409, *store),
                body="NewJob",
                params=[_IDEMPOTENCY],
            )
        },
        "/info": {
            "get": _operation(
                "One job (the original worker's)",
                "Job",
                (404, *store),
                params=[_param("id", "query", _int(1), required=True)],
            )
        },
        "/metrics": {"get": _operation("Prometheus metrics", None, media="text/plain")},
        "/openapi.json": {"get": _operation("This document", None)},
    }


def _job_filters() -> list[dict[str, Any]]:
    """GET /jobs's query (and the dashboard's GET /api/jobs)."""
    return [
        _filter("status", {"type": "string", "enum": [s.value for s in Status]}),
        _filter("function", {"type": "string"}),
        _filter("queue", _QUEUE),
        _filter("limit", _int(0, MAX_LIMIT)),
        _filter("offset", _int(0)),
    ]


def _dashboard_paths() -> dict[str, Any]:
    """The dashboard's read endpoints and the control API: always behind the token."""
    from procorch.gateway.control import BODIES

    name = [_param("name", "path", {"type": "string", "minLength": 1})]
    job_id = [_param("id", "path", _int(1))]
    daemon = (404, 409, 503, 504)
    # a page holding the history up to `since` gets each series' newest point only
    since = _filter("since", {"type": "number"})

    def change(summary: str, body: str | None, ok: str = "Changed") -> dict[str, Any]:
        op = _operation(summary, ok, daemon, params=name)
        if body:
            op["requestBody"] = {
                "required": bool(BODIES[body].schema()["required"]),  # {} will do, else not
                "content": {"application/json": {"schema": _ref(body)}},
            }
            op["responses"]["400"] = {"$ref": "#/components/responses/E400"}
            op["responses"]["413"] = {"$ref": "#/components/responses/E413"}
        return op

    paths: dict[str, Any] = {
        "/api/overview": {
            "get": _operation("Every replica, warnings, job counts", "Overview", params=[since])
        },
        "/api/services/{name}": {
            "get": _operation(
                "A service and its recent events", "ServicePage", (404,), params=[*name, since]
            )
        },
        "/api/services/{name}/log": {
            "get": _operation(
                "A replica's log: its last lines, or those after an offset",
                "LogTail",
                (404,),
                params=[
                    *name,
                    _filter("replica", _int(0)),
                    _filter("after", _int(0)),
                    _filter("lines", _int(1, MAX_LINES)),
                ],
            )
        },
        "/api/events": {
            "get": _operation(
                "The event log, or what came after an offset",
                "Events",
                params=[
                    _filter("service", {"type": "string"}),
                    _filter("kind", {"type": "string"}),
                    _filter("after", _int(0)),
                    _filter("limit", _int(1, MAX_LINES)),
                ],
            )
        },
        "/api/jobs/overview": {
            "get": _operation(
                "Job counts, throughput, durations, schedules",
                "JobsOverview",
                (503,),
                params=[since],
            )
        },
        "/api/jobs": {
            "get": _operation("A page of jobs", "JobList", (503,), params=_job_filters())
        },
        "/api/jobs/{id}": {"get": _operation("One job", "Job", (404, 503), params=job_id)},
        "/api/services/{name}/start": {"post": change("Start a service or replica", None)},
        "/api/services/{name}/stop": {"post": change("Stop a service or replica", None)},
        "/api/services/{name}/restart": {
            "post": change("Restart a service or replica, rolling if asked", "Restart")
        },
        "/api/services/{name}/scale": {"post": change("Scale a service, live", "Scale")},
        "/api/services/{name}/signal": {
            "post": change("Signal a service's processes", "Signal", "Signalled")
        },
        "/api/reload": {
            "post": change("Read the config file again and apply it", "Reload", "Reloaded")
        },
        "/api/jobs/{id}/cancel": {
            "post": _operation("Cancel a job", "JobChanged", (404, 409, 503), params=job_id)
        },
        "/api/jobs/{id}/requeue": {
            "post": _operation("Requeue a failed job", "JobChanged", (404, 409, 503), params=job_id)
        },
    }
    del paths["/api/reload"]["post"]["parameters"]  # it names no service
    del paths["/api/reload"]["post"]["responses"]["404"]
    # the gateway's own service: the answer cannot wait for the process being replaced
    for action in ("start", "stop", "restart"):
        responses = paths[f"/api/services/{{name}}/{action}"]["post"]["responses"]
        responses["202"] = {"description": "Sent (to the gateway itself)", **responses["200"]}
    for item in paths.values():
        for op in item.values():
            op["security"] = [{"bearer": []}]
            # the daemon does not answer (or no gateway process runs, and it answers)
            op["responses"]["503"] = {"$ref": "#/components/responses/E503"}
            op["responses"]["401"] = {"$ref": "#/components/responses/E401"}
            if "post" in item:
                op["responses"]["403"] = {"$ref": "#/components/responses/E403"}
    return paths


def document(config: Config) -> dict[str, Any]:
    """The OpenAPI document of a gateway run with `config`."""
    paths = _paths(config) | _dashboard_paths()
    responses = {
        f"E{code}": {
            "description": reason,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for code, reason in REASONS.items()
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": __version__,
            "description": "procorch's HTTP gateway: services and jobs as JSON.",
        },
        "paths": paths,
        "components": {"schemas": _schemas(config), "responses": responses},
    }
    # the dashboard and control API always need a token; the rest, if one is configured
    doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    if config.gateway.token:
        doc["security"] = [{"bearer": []}]
        for path, item in paths.items():
            for op in item.values():
                if path != "/health":
                    op["responses"]["401"] = {"$ref": "#/components/responses/E401"}
    return doc
