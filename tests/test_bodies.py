"""The declared request bodies: a body's check (what the services run) and its JSON Schema
(what the gateway's OpenAPI document says) agree, value for value, at and past each limit.

The schemas are judged by a real JSON-Schema validator (jsonschema_rs, schemathesis's own),
whose patterns follow ECMA-262 as the document's must.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from procorch.config import load_config
from procorch.gateway.openapi import document
from procorch.services.bodies import (
    BY_USER,
    MAX_PAGE,
    NEW_NOTIFICATION,
    NEW_ORDER,
    NEW_USER,
    PAGE,
    SEND_NOTIFICATION,
    Body,
    Boolean,
    Choice,
    Email,
    Field,
    Identifier,
    Integer,
    Text,
)
from procorch.services.fields import EMAIL_LENGTH, MAX_INTEGER, WHITESPACE
from procorch.services.protocol import Invalid

ABSENT: Any = object()  # a case that leaves the field out of the body
# Bodies as the lead's control API would declare them: the kinds work outside the services.
SCALE = Body(Integer("replicas", minimum=1, maximum=1000))
SIGNAL = Body(Choice("signal", ("term", "hup", "kill")), Boolean("group", default=False))
BODIES = {
    "NEW_USER": NEW_USER,
    "NEW_ORDER": NEW_ORDER,
    "NEW_NOTIFICATION": NEW_NOTIFICATION,
    "SEND_NOTIFICATION": SEND_NOTIFICATION,
    "PAGE": PAGE,
    "BY_USER": BY_USER,
    "SCALE": SCALE,
    "SIGNAL": SIGNAL,
}


def example(field: Field) -> Any:
    """A value `field` accepts, to fill in the body around the field under test."""
    if isinstance(field, Email):
        return "a@example.org"
    if isinstance(field, Text):
        return "x"
    if isinstance(field, Integer):
        return field.minimum or 0
    if isinstance(field, Choice):
        return field.choices[0]
    assert isinstance(field, Boolean)
    return False


def edges(field: Field) -> list[tuple[Any, bool]]:
    """Values of `field` at and past each of its limits, each with whether it is valid."""
    cases: list[tuple[Any, bool]] = [(ABSENT, not field.required), (None, False)]
    if isinstance(field, Email):
        at = "a" * (EMAIL_LENGTH - len("@b.cd")) + "@b.cd"
        return cases + [
            ("a@b.cd", True),
            (at, True),
            ("a" + at, False),
            (" a@b.cd\u3000", True),  # stripped
            ("a@b.cd\x1c", True),  # Python's white space, not ECMA-262's \s: stripped
            ("a@b.cd\ufeff", True),  # ECMA-262's \s, not Python's: part of the address
            ("a@b", False),
            ("a@b.cd.", False),
            ("a@@b.cd", False),
            ("a b@c.de", False),
            ("not-an-email", False),
            ("", False),
            (5, False),
        ]
    if isinstance(field, Text):
        longest = field.max_length
        return cases + [
            ("a" * longest, True),
            ("a" * (longest + 1), False),
            ("\U0001f600" * longest, True),  # characters, not bytes nor UTF-16 units
            ("\U0001f600" * (longest + 1), False),
            ("a", True),
            (" a ", True),
            ("\ufeff", True),  # not white space to Python: text
            ("", False),
            (" \t\n\x1c\x85\xa0\u2000\u3000", False),  # blank: white space only
            (5, False),
            (["a"], False),
        ]
    if isinstance(field, Integer):
        assert field.minimum is not None  # every declared integer has a floor
        low, high = field.minimum, field.maximum
        return cases + [
            (low, True),
            (low - 1, False),
            (high, True),
            (high + 1, False),
            (float(low), True),  # JSON does not tell 2.0 from 2
            (low + 0.5, False),
            (True, False),
            (str(low), False),
        ]
    if isinstance(field, Choice):
        return cases + [
            *[(choice, True) for choice in field.choices],
            ("fax", False),
            ("", False),
            (1, False),
        ]
    assert isinstance(field, Boolean)
    return cases + [(True, True), (False, True), (0, False), (1, False), ("true", False)]


CASES = [
    pytest.param(body, field.name, value, valid, id=f"{name}.{field.name}={value!r:.20}")
    for name, body in BODIES.items()
    for field in body.fields
    for value, valid in edges(field)
]


def with_value(body: Body, name: str, value: Any) -> dict[str, Any]:
    data = {field.name: example(field) for field in body.fields if field.required}
    data.pop(name, None)
    return data if value is ABSENT else data | {name: value}


def checks(body: Body, data: dict[str, Any]) -> bool:
    try:
        body.check(data)
    except Invalid:
        return False
    return True


def validator(body: Body) -> Any:
    return jsonschema_rs.Draft202012Validator(body.schema())


@pytest.mark.parametrize(("body", "name", "value", "valid"), CASES)
def test_the_check_and_the_schema_agree_at_each_limit(
    body: Body, name: str, value: Any, valid: bool
) -> None:
    data = with_value(body, name, value)
    assert checks(body, data) is valid
    assert validator(body).is_valid(data) is valid


@pytest.mark.parametrize(
    ("body", "data"),
    [
        # the check strips before it counts; maxLength counts the spaces too
        (NEW_USER, {"username": "u" * 64 + " ", "email": "a@b.cd"}),
        (NEW_ORDER, {"user_id": 1, "product": " " + "p" * 200}),
        # the check takes a choice in any case; the document names its one spelling
        (NEW_NOTIFICATION, {"user_id": 1, "message": "hi", "type": "SMS"}),
    ],
)
def test_where_they_differ_the_schema_is_the_stricter(body: Body, data: dict) -> None:
    """The document never promises what the check refuses: its few differences refuse."""
    assert checks(body, data)
    assert not validator(body).is_valid(data)


def test_the_whitespace_class_is_what_python_strips_spelt_for_ecma_262() -> None:
    """Every code point: in the class iff str.isspace() (what strip() removes and `\\s`
    matches in the services); and the schema's engine reads the class the same way."""
    in_class = re.compile(f"[{WHITESPACE}]")
    spaces = set()
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        python = char.isspace()
        assert (in_class.fullmatch(char) is not None) is python, hex(point)
        assert (re.fullmatch(r"\s", char) is not None) is python, hex(point)
        if python:
            spaces.add(char)
    ecma = jsonschema_rs.Draft202012Validator({"type": "string", "pattern": f"^[{WHITESPACE}]$"})
    others = ["\ufeff", "\u180e", "\u200b", "a", "\x1b", "\x21"]  # \s to someone, not Python
    assert all(ecma.is_valid(char) for char in spaces)
    assert not any(ecma.is_valid(char) for char in others)


def test_a_check_gives_the_cleaned_values_with_the_defaults() -> None:
    order = NEW_ORDER.check({"user_id": 3.0, "product": " pen ", "extra": "ignored"})
    assert order == {"user_id": 3, "product": "pen", "quantity": 1}
    note = SEND_NOTIFICATION.check({"user_id": 1, "message": "hi", "type": "SMS"})
    assert note == {"user_id": 1, "message": "hi", "type": "sms", "order_id": None}
    assert BY_USER.check({}) == {"limit": 100, "offset": 0, "user_id": None}
    assert SIGNAL.check({"signal": "TERM"}) == {"signal": "term", "group": False}


@pytest.mark.parametrize(
    ("body", "data", "message"),
    [
        (NEW_USER, {"email": "a@b.cd"}, "username and email are required"),
        (NEW_USER, {"username": "  ", "email": "a@b.cd"}, "`username` must not be empty"),
        (NEW_USER, {"username": "u" * 65, "email": "a@b.cd"}, "longer than 64 characters"),
        (NEW_ORDER, {"user_id": 1, "product": "p", "quantity": None}, "integer, not null"),
        (NEW_ORDER, {"user_id": 1, "product": "p", "quantity": 10**6 + 1}, "at most 1000000"),
        (NEW_NOTIFICATION, {"user_id": 1, "message": "m", "type": None}, "email, sms, not null"),
        (PAGE, {"limit": MAX_PAGE + 1}, f"`limit` is out of range: it must be at most {MAX_PAGE}"),
        (BY_USER, {"user_id": MAX_INTEGER + 1}, f"it must be at most {MAX_INTEGER}"),
        (SCALE, {}, "replicas is required"),
        (SIGNAL, {"signal": "term", "group": 1}, "`group` must be true or false"),
        (SIGNAL, {"signal": "term", "group": None}, "`group` must be true or false, not null"),
        (SCALE, [{"replicas": 1}], "the body must be a JSON object"),
    ],
)
def test_a_refusal_is_one_line_that_names_the_field(body: Body, data: Any, message: str) -> None:
    with pytest.raises(Invalid, match=re.escape(message)):
        body.check(data)


def test_a_field_declared_twice_is_a_mistake_said_at_import() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        PAGE.extend(Identifier("offset"))


def test_the_gateway_document_is_made_from_the_declarations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no procorch.toml here: the built-in stack's config
    doc = document(load_config(environ={}))
    schemas = doc["components"]["schemas"]
    assert schemas["NewUser"] == NEW_USER.schema()
    assert schemas["NewOrder"] == NEW_ORDER.schema()
    assert schemas["NewNotification"] == NEW_NOTIFICATION.schema()
    assert "order_id" not in schemas["NewNotification"]["properties"]  # services' own field

    def query(path: str) -> dict[str, Any]:
        return {p["name"]: p["schema"] for p in doc["paths"][path]["get"]["parameters"]}

    page = {field.name: field.schema() for field in PAGE.fields}
    assert query("/users") == page
    assert (
        query("/orders")
        == query("/notifications")
        == page | {"user_id": {"type": "integer", "minimum": 1, "maximum": MAX_INTEGER}}
    )
