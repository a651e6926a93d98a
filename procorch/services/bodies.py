"""Request bodies declared once: each is a `Body` of typed fields, from which both the
services' checks (`Body.check`) and the gateway's OpenAPI schemas (`Body.schema`) are made,
so a limit (a username's 64 characters, a page's 1000 records) is written in one place.

    NEW_THING = Body(Text("name", max_length=64), Integer("count", minimum=1, default=1))
    thing = NEW_THING.check(data)   # {"name": "pen", "count": 1}, or raises Invalid
    NEW_THING.schema()              # {"type": "object", "required": ["name"], ...}

A check does what the `fields` function of its kind does, with its messages; a schema
promises no more than the check accepts. Where the two cannot say the same thing, the
schema is the stricter: its `maxLength` counts the spaces the check strips, and its enum
is the lower-case spelling of a choice the check takes in any case.

This module is below the gateway (whose `openapi` imports it) and imports nothing above
the services.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from procorch.services import fields
from procorch.services.fields import EMAIL, EMAIL_LENGTH, MAX_INTEGER, MISSING, WHITESPACE
from procorch.services.protocol import Invalid

MAX_PAGE = 1000  # records in one page of a list action


@dataclass(frozen=True)
class Field:
    """One field of a body: its `check` (the cleaned value, or `Invalid`) and its schema."""

    name: str

    @property
    def required(self) -> bool:
        """No default: Text and Email have none, the other kinds unless one is given."""
        return getattr(self, "default", MISSING) is MISSING

    def check(self, data: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def _with_default(self, schema: dict[str, Any]) -> dict[str, Any]:
        """`schema` with the field's default, if it has one (None: absent stays absent)."""
        default = getattr(self, "default", MISSING)
        return schema if default is MISSING or default is None else {**schema, "default": default}


@dataclass(frozen=True)
class Text(Field):
    """A required, non-blank string, stripped, of at most `max_length` characters."""

    max_length: int = 1000

    def check(self, data: Mapping[str, Any]) -> str:
        return fields.text(data, self.name, max_length=self.max_length)

    def schema(self) -> dict[str, Any]:
        # Some character other than white space: the check refuses blank text.
        return {"type": "string", "pattern": f"[^{WHITESPACE}]", "maxLength": self.max_length}


@dataclass(frozen=True)
class Email(Field):
    """A required email address (see `fields.EMAIL`), stripped."""

    def check(self, data: Mapping[str, Any]) -> str:
        return fields.email(data, self.name)

    def schema(self) -> dict[str, Any]:
        # The white space around is what the check strips before matching.
        pattern = f"^[{WHITESPACE}]*{EMAIL}[{WHITESPACE}]*$"
        return {"type": "string", "pattern": pattern, "maxLength": EMAIL_LENGTH}


@dataclass(frozen=True)
class Integer(Field):
    """An integer from `minimum` to `maximum`; a `default` (None too) makes it optional."""

    minimum: int | None = None
    maximum: int = MAX_INTEGER
    default: int | None = MISSING

    def check(self, data: Mapping[str, Any]) -> int | None:
        return fields.integer(
            data, self.name, minimum=self.minimum, maximum=self.maximum, default=self.default
        )

    def schema(self) -> dict[str, Any]:
        bounds = {"maximum": self.maximum}
        if self.minimum is not None:
            bounds = {"minimum": self.minimum, **bounds}
        return self._with_default({"type": "integer", **bounds})


@dataclass(frozen=True)
class Identifier(Integer):
    """A record id: an integer from 1 (required unless given a `default`, such as None)."""

    minimum: int | None = 1


@dataclass(frozen=True)
class Choice(Field):
    """One of `choices` (lower case; the check takes any case and lowers it)."""

    choices: tuple[str, ...]
    default: str = MISSING

    def check(self, data: Mapping[str, Any]) -> str:
        return fields.choice(data, self.name, self.choices, self.default)

    def schema(self) -> dict[str, Any]:
        return self._with_default({"type": "string", "enum": list(self.choices)})


@dataclass(frozen=True)
class Boolean(Field):
    """JSON true or false; a `default` makes it optional."""

    default: bool = MISSING

    def check(self, data: Mapping[str, Any]) -> bool:
        return fields.boolean(data, self.name, self.default)

    def schema(self) -> dict[str, Any]:
        return self._with_default({"type": "boolean"})


class Body:
    """A JSON object of `fields`. Others in it are ignored (the gateway passes on only the
    declared ones), so the schema does not forbid them; unless the body is `closed`, when
    another field is refused (a control request's typo must not pass for a default)."""

    def __init__(self, *fields: Field, closed: bool = False) -> None:
        names = [field.name for field in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"a field is declared twice: {names}")
        self.fields = fields
        self.closed = closed

    def __repr__(self) -> str:
        return f"Body{self.fields!r}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(field.name for field in self.fields)

    def extend(self, *fields: Field) -> Body:
        """This body with more fields, checked after its own."""
        return Body(*self.fields, *fields, closed=self.closed)

    def check(self, data: Any) -> dict[str, Any]:
        """Every field's cleaned value (an absent optional one: its default), by name.

        The required fields are looked for first, all at once, so that a body lacking
        some is told all their names in the original services' words (`username and
        email are required`); then each field is checked, in order."""
        if not isinstance(data, Mapping):
            raise Invalid("the body must be a JSON object")
        if self.closed and (unknown := sorted(set(data) - set(self.names))):
            known = ", ".join(self.names) or "none"
            raise Invalid(f"unknown field {unknown[0][:40]!r} (known: {known})")
        required = [field.name for field in self.fields if field.required]
        if required:
            fields.required(data, *required)
        return {field.name: field.check(data) for field in self.fields}

    def schema(self) -> dict[str, Any]:
        """The JSON Schema (2020-12, as OpenAPI 3.1 has it) of the body."""
        schema = {
            "type": "object",
            "required": [field.name for field in self.fields if field.required],
            "properties": {field.name: field.schema() for field in self.fields},
        }
        return {**schema, "additionalProperties": False} if self.closed else schema


# -- the built-in services' bodies ---------------------------------------------------------

NEW_USER = Body(Text("username", max_length=64), Email("email"))
NEW_ORDER = Body(
    Identifier("user_id"),
    Text("product", max_length=200),
    Integer("quantity", minimum=1, maximum=1_000_000, default=1),
)
NOTIFICATION_TYPES = ("email", "sms")
NEW_NOTIFICATION = Body(
    Identifier("user_id"),
    Text("message", max_length=2000),
    Choice("type", NOTIFICATION_TYPES, default="email"),
)
# What `send_notification` checks: the gateway's body, and the `order_id` that only
# OrderService sends (an order's own note, whose user the order has checked already).
SEND_NOTIFICATION = NEW_NOTIFICATION.extend(Identifier("order_id", default=None))

# The query of a list action: a page, and for orders and notifications one user's only.
PAGE = Body(
    Integer("limit", minimum=1, maximum=MAX_PAGE, default=100),
    Integer("offset", minimum=0, default=0),
)
BY_USER = PAGE.extend(Identifier("user_id", default=None))


def user_filter(user_id: int | None) -> tuple[str, tuple[int, ...]]:
    """The WHERE clause and its parameters for BY_USER's `user_id` (None: every user's)."""
    return ("", ()) if user_id is None else ("WHERE user_id = ?", (user_id,))
