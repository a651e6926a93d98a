"""The message protocol between services: frames, requests, replies and error codes.

On the wire every message is one frame: a 4-byte big-endian length, then that many
bytes of UTF-8 JSON holding one object. JSON only: nothing read from a socket is ever
unpickled or imported.

A request::

    {"request_id": "4211-7", "action": "create_user", "data": {...},
     "sender": "OrderService.0", "sent_at": 1795000000.123}

with an optional `"reply": false` for a notification, which gets no reply, and an optional
`"idempotency_key"` (1 to 255 visible ASCII characters) for an action that takes one: the
service then runs the request at most once per key (see `base.Service.commit`). The key is
a field of the frame, not of `data`, since it is not the action's input. A reply::

    {"request_id": "4211-7", "status": "success", "data": {...}}
    {"request_id": "4211-7", "status": "error", "code": "not_found", "message": "..."}

`request_id` is the caller's, echoed back; a reply to a frame that could not be read
carries `request_id: null`. The error codes are the `CODES` below.
"""

from __future__ import annotations

import json
import re
import struct
import time
from typing import Any

import orjson

HEADER = struct.Struct(">I")
MAX_MESSAGE = 1024 * 1024  # bytes of JSON in one frame, either way

# Machine-readable error codes, and what each means.
CODES = {
    "invalid": "the request or its data is malformed or fails validation",
    "not_found": "the thing asked for does not exist",
    "conflict": "it would clash with what exists (a duplicate username, say)",
    "unknown_action": "the service has no such action",
    "too_large": "the frame is larger than MAX_MESSAGE",
    "unavailable": "no replica of the service is running, or it died mid-request",
    "timeout": "no reply within the caller's timeout",
    "internal": "the action failed unexpectedly (the service logs the traceback)",
    "key_reused": "the idempotency key was already used for a different request",
}
MAX_KEY = 255  # characters of an idempotency key, as Stripe's
KEY_RETENTION = 24 * 3600  # seconds an idempotency key is remembered, at least
# Visible ASCII: nothing a header, a log line or a terminal could mangle or hide.
_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY}}}")

_std_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> bytes:
    """JSON bytes: orjson (25× faster than the standard library here, which is most of a
    round trip's CPU), or the standard library for what orjson refuses (integers beyond
    64 bits, non-string keys), so any JSON-able value goes. An integer past Python's
    int-to-text limit (4,300 digits) cannot be written at all: Invalid, not a crash."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        try:
            return _std_dumps(value).encode()
        except ValueError as exc:  # "Exceeds the limit (4300 digits) ..."
            raise Invalid(f"cannot send an integer this long: {str(exc).split(';')[0]}") from None


def loads(body: bytes) -> Any:
    """The value of JSON bytes; ValueError if they are not JSON. What `dumps` wrote, it
    reads: the standard library takes the integers beyond 64 bits that orjson refuses."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)  # raises ValueError too, for what is not JSON at all


class ServiceError(Exception):
    """An error reply, raised by an action or by the client; `code` is one of CODES.

    The client sets `request_id` to the id of the request it refuses, once one was sent
    (to find it in the service's log); it stays None for a request that never left."""

    request_id: Any = None

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Invalid(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__("invalid", message)


class NotFound(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__("not_found", message)


class Conflict(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__("conflict", message)


class KeyReused(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__("key_reused", message)


class Unavailable(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


class CallTimeout(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


def frame(message: dict[str, Any]) -> bytes:
    """One message, ready to send; ValueError if it is larger than MAX_MESSAGE."""
    body = dumps(message)
    if len(body) > MAX_MESSAGE:
        raise ValueError(f"message of {len(body)} bytes is over the {MAX_MESSAGE}-byte limit")
    return HEADER.pack(len(body)) + body


def request(
    request_id: str,
    action: str,
    data: dict[str, Any],
    sender: str,
    reply: bool = True,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    message = {
        "request_id": request_id,
        "action": action,
        "data": data,
        "sender": sender,
        "sent_at": time.time(),
    }
    if not reply:
        message["reply"] = False
    if idempotency_key is not None:
        message["idempotency_key"] = idempotency_key
    return message


def key_problem(key: Any) -> str | None:
    """What is wrong with an idempotency key (None: nothing), to be said after its name."""
    if type(key) is not str:
        return "must be a string"
    if not _KEY.fullmatch(key):
        return f"must be 1 to {MAX_KEY} visible ASCII characters (no spaces)"
    return None


def success(request_id: Any, data: Any) -> dict[str, Any]:
    return {"request_id": request_id, "status": "success", "data": data}


def error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"request_id": request_id, "status": "error", "code": code, "message": message}


def parse_request(body: bytes) -> dict[str, Any]:
    """The request in a frame's body, checked field by field; `Invalid` says what is wrong."""
    try:
        message = loads(body)
    except ValueError as exc:
        raise Invalid(f"the frame is not JSON: {exc}") from None
    if type(message) is not dict:
        raise Invalid("a request must be a JSON object")
    # exact type checks: cheap, and they keep `true` from passing for an id
    if type(message.get("request_id")) not in (str, int):
        raise Invalid(_field_problem(message, "request_id", "a string"))
    if type(message.get("action")) is not str:
        raise Invalid(_field_problem(message, "action", "a string"))
    if type(message.get("data")) is not dict:
        raise Invalid(_field_problem(message, "data", "an object"))
    return message


def _field_problem(message: dict[str, Any], key: str, kind: str) -> str:
    return f"the request has no `{key}`" if key not in message else f"`{key}` must be {kind}"


def raise_for(reply: dict[str, Any]) -> Any:
    """A reply's data, or its error raised as a `ServiceError` (of the matching class)."""
    if reply.get("status") == "success":
        return reply.get("data")
    code = str(reply.get("code") or "internal")
    message = str(reply.get("message") or "the service replied with an error")
    cls = _ERRORS.get(code)
    exc = cls(message) if cls else ServiceError(code, message)
    exc.request_id = reply.get("request_id")
    raise exc


_ERRORS: dict[str, type[ServiceError]] = {
    "invalid": Invalid,
    "not_found": NotFound,
    "conflict": Conflict,
    "key_reused": KeyReused,
    "unavailable": Unavailable,
    "timeout": CallTimeout,
}
