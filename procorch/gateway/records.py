"""The data services over HTTP: /users, /orders, /notifications.

Each endpoint is one call to the service behind it; the service validates (required
fields, defaults, bounds) and stores, and its refusals come back as HTTP errors (see
`http.SERVICE_STATUS`), with the same messages as over the protocol. Only the fields
an endpoint documents are passed on, so a body cannot smuggle in others.

A POST that creates something passes its `Idempotency-Key` header on: sent again with the
same key and body, it creates nothing more and answers as the first time (same status,
same body), however the first attempt ended.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask.typing import ResponseReturnValue

from procorch.gateway.http import idempotency_key, json_body, query_int, respond
from procorch.gateway.system import backend

bp = Blueprint("records", __name__)

USERS, ORDERS, NOTIFICATIONS = "UserService", "OrderService", "NotificationService"


def _pick(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: body[name] for name in names if name in body}


def _query(*filters: str) -> dict[str, Any]:
    """The page (`limit`, `offset`) and integer `filters` the query string gives."""
    values = {name: query_int(name) for name in ("limit", "offset", *filters)}
    return {name: value for name, value in values.items() if value is not None}


def _listed(key: str, reply: dict[str, Any]) -> ResponseReturnValue:
    return respond(
        {"status": "success", key: reply[key], "count": reply["count"], "total": reply["total"]}
    )


def _create(service: str, action: str, *fields: str) -> Any:
    """The reply of `action` to the body's `fields`, with the request's Idempotency-Key."""
    data = _pick(json_body(), *fields)
    return backend().call(service, action, data, idempotency_key=idempotency_key())


def _created(service: str, action: str, key: str, *fields: str) -> ResponseReturnValue:
    """201 with the record `action` made from the body's `fields`. The service says which
    are required and what a missing one defaults to, in the original's words."""
    reply = _create(service, action, *fields)
    message = f"{key.capitalize()} created successfully"
    return respond({"status": "success", "message": message, key: reply[key]}, 201)


def _one(service: str, action: str, key: str, record_id: int) -> ResponseReturnValue:
    reply = backend().call(service, action, {f"{key}_id": record_id})
    return respond({"status": "success", key: reply[key]})


# -- users -------------------------------------------------------------------------------


@bp.post("/users")
def create_user() -> ResponseReturnValue:
    return _created(USERS, "create_user", "user", "username", "email")


@bp.get("/users")
def list_users() -> ResponseReturnValue:
    return _listed("users", backend().call(USERS, "list_users", _query()))


@bp.get("/users/<int:user_id>")
def get_user(user_id: int) -> ResponseReturnValue:
    return _one(USERS, "get_user", "user", user_id)


# -- orders ------------------------------------------------------------------------------


@bp.post("/orders")
def create_order() -> ResponseReturnValue:
    return _created(ORDERS, "create_order", "order", "user_id", "product", "quantity")


@bp.get("/orders")
def list_orders() -> ResponseReturnValue:
    return _listed("orders", backend().call(ORDERS, "list_orders", _query("user_id")))


@bp.get("/orders/<int:order_id>")
def get_order(order_id: int) -> ResponseReturnValue:
    return _one(ORDERS, "get_order", "order", order_id)


# -- notifications -----------------------------------------------------------------------


@bp.post("/notifications")
def send_notification() -> ResponseReturnValue:
    reply = _create(NOTIFICATIONS, "send_notification", "user_id", "message", "type")
    note = reply["notification"]
    return respond(
        {
            "status": "success",
            "message": f"{note['type'].capitalize()} notification sent",
            "user_id": note["user_id"],
            "notification": note,
        }
    )


@bp.get("/notifications")
def list_notifications() -> ResponseReturnValue:
    reply = backend().call(NOTIFICATIONS, "list_notifications", _query("user_id"))
    return _listed("notifications", reply)
