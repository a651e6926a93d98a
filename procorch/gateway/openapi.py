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
from procorch.gateway.http import IDEMPOTENCY_KEY, respond
from procorch.gateway.system import TITLE
from procorch.jobs.api import LATEST, MAX_DELAY, MAX_LIMIT
from procorch.jobs.job import Status
from procorch.services.bodies import BY_USER, NEW_NOTIFICATION, NEW_ORDER, NEW_USER, PAGE, Body
from procorch.services.protocol import MAX_KEY

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
    503: "The service (or job store) behind the endpoint is down, or busy or hung (holding"
    " its share of the gateway's threads)",
    507: "The job store is full: its disk (or Redis's maxmemory) has no room",
    504: "The service behind the endpoint did not answer in time",
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
    job_page = [_filter("limit", _int(0, MAX_LIMIT)), _filter("offset", _int(0))]
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
                params=[
                    _filter("status", {"type": "string", "enum": [s.value for s in Status]}),
                    _filter("function", {"type": "string"}),
                    _filter("queue", _QUEUE),
                    *job_page,
                ],
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


def document(config: Config) -> dict[str, Any]:
    """The OpenAPI document of a gateway run with `config`."""
    paths = _paths(config)
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
    if config.gateway.token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
        for path, item in paths.items():
            for op in item.values():
                if path != "/health":
                    op["responses"]["401"] = {"$ref": "#/components/responses/E401"}
    return doc
