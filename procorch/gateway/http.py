"""JSON in and out: request bodies, responses, and errors with the right HTTP status.

Every answer is JSON. An error is `{"status": "error", "message": ..., "code": ...}`:
`code` is a short machine-readable word (the services' error codes where a service
refused, else the HTTP reason, e.g. `method_not_allowed`).
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from flask import Response, request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import BaseConverter

from procorch.services.fields import MAX_INTEGER
from procorch.services.protocol import ServiceError, dumps, key_problem, loads

# A service's error code -> the HTTP status the gateway answers with.
SERVICE_STATUS = {
    "invalid": 400,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    # an Idempotency-Key sent again with another body: the data is valid, the key's state
    # conflicts with it (the IETF draft's 422 says invalid data, which it is not)
    "key_reused": 409,
    "unavailable": 503,
    "timeout": 504,
    "unknown_action": 500,  # the gateway asked for an action the service lacks: our bug
    "internal": 500,
}
# An HTTP status -> the `code` of an error the gateway answers itself: the services' word
# for the same status where they have one.
CODES = {status: code for code, status in SERVICE_STATUS.items() if status != 500}
CODES |= {401: "unauthorized", 403: "forbidden", 409: "conflict", 500: "internal"}
CODES[507] = "store_full"  # the job store's disk (or Redis's memory) is full


class ApiError(Exception):
    """An answer other than success: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODES.get(status, "error")

    @classmethod
    def from_service(cls, exc: ServiceError) -> ApiError:
        return cls(SERVICE_STATUS.get(exc.code, 500), exc.message, exc.code)


def fail(status: int, message: str) -> NoReturn:
    raise ApiError(status, message)


def respond(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status, mimetype="application/json")


def error_body(status: int, message: str, code: str) -> bytes:
    return dumps({"status": "error", "message": message, "code": code})


def error_response(exc: ApiError) -> Response:
    return Response(
        error_body(exc.status, exc.message, exc.code), exc.status, mimetype="application/json"
    )


def json_body(*required: str) -> dict[str, Any]:
    """The request's JSON object; 400 if it is not one or lacks a `required` field.

    The body is parsed whatever the Content-Type says, as the originals' clients
    (curl -d) do not always set it; `max_body` was enforced before this reads it."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        fail(400, "the request body must be a JSON object")
    try:
        body = loads(raw)
    except ValueError as exc:  # orjson's reason: where, and what (a number past a double's range)
        fail(400, f"the request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        fail(400, f"the request body must be a JSON object, not {_kind(body)}")
    body = {name: integral(value) for name, value in body.items()}
    missing = [name for name in required if body.get(name) is None]
    if missing:
        fail(400, f"`{missing[0]}` is required")
    return body


IDEMPOTENCY_KEY = "Idempotency-Key"


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header, None without one; 400 if it is not a key.

    A POST that creates something passes it on to the service, which runs the request
    at most once per key and answers a retry with the first reply (see README.md)."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and (problem := key_problem(key)) is not None:
        fail(400, f"the {IDEMPOTENCY_KEY} header {problem}")
    return key


def query_int(name: str, default: int | None = None) -> int | None:
    """An integer query parameter; 400 if it is there but not an integer."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    return integer_text(raw, name)


# ASCII digits, and an integer written as a number with a zero fraction (12.0), which
# JSON Schema's `integer` is too; not int()'s extras (spaces, 1_000, other scripts' digits).
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+(?:\.0*)?")


# Digits of the largest integer anything in the gateway takes (2**63 - 1, SQLite's): one
# with more is out of every range, and is refused before int() reads it, which for over
# 4,300 digits raises ValueError (a 500, on 8 endpoints, before this check).
MAX_DIGITS = len(str(MAX_INTEGER))


def integer_text(raw: str, name: str) -> int:
    """An integer written in a path or a query string; 400 if it is not one."""
    if not _INTEGER_TEXT.fullmatch(raw):
        fail(400, f"`{name}` must be an integer, got {short(raw)!r}")
    return _bounded_int(raw.partition(".")[0], f"`{name}`")


def _bounded_int(text: str, what: str) -> int:
    """int(`text`), ASCII digits with an optional sign (as checked before); 400 if it
    has more than MAX_DIGITS.

    Leading zeros are dropped first: int() counts them towards its limit too."""
    sign = text[0] if text[0] in "+-" else ""
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > MAX_DIGITS:
        fail(400, f"{what} is out of range: {len(digits)} digits, more than a 64-bit integer has")
    return int(sign + digits)


def short(raw: str, keep: int = 40) -> str:
    """`raw`, cut short for a one-line message: it may be megabytes."""
    return raw if len(raw) <= keep else f"{raw[:keep]}… ({len(raw)} characters)"


class IntegerConverter(BaseConverter):
    """`<int:name>` in the gateway's routes: ASCII digits as an integer, as werkzeug's
    converter reads them (but not other scripts' digits, as the query strings); one too
    long for int() is a 400, not werkzeug's 404 "no such endpoint" echoing the number."""

    regex = r"[0-9]+"

    def to_python(self, value: str) -> int:
        try:
            return _bounded_int(value, "the id in the path")
        except ApiError as exc:
            # raised while routing, where Flask keeps only an HTTPException for later
            raise BadRequest(exc.message) from None


def integral(value: Any) -> Any:
    """A number with no fraction as the integer it is: JSON does not tell 2.0 from 2, nor
    does the OpenAPI document (its `integer` is any number without a fraction)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
