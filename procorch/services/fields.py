"""Checking the `data` of a request: one function per kind of field, each raising `Invalid`
with a message that names the field, so every service validates the same way.

Bodies are declared with these kinds in `bodies` (which also makes their JSON Schemas);
a service of one's own may call the functions directly, as `fields.text(data, "text")`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from procorch.config import MAX_INT64
from procorch.services.protocol import Invalid

# No value: as a default it makes the field required; from `_given`, an absent optional one.
MISSING: Any = object()
# White space as the services see it (Python's str.isspace(), what str.strip() removes and
# `\s` matches), spelt out so that the JSON Schemas in `bodies` can use it: their patterns
# are ECMA-262's, whose `\s` lacks \x1c-\x1f and \x85 and has \ufeff.
WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Deliberately loose (the only real check of an address is mail reaching it): one @,
# no spaces, and a dot in the domain.
EMAIL = rf"[^@{WHITESPACE}]+@[^@{WHITESPACE}]+\.[^@.{WHITESPACE}]+"
EMAIL_LENGTH = 254  # RFC 5321's longest path, less its angle brackets
_EMAIL = re.compile(EMAIL)
MAX_INTEGER = MAX_INT64  # SQLite's largest: a larger one can be neither stored nor looked up


def required(data: Mapping[str, Any], *keys: str) -> None:
    """Every one of `keys` given, and not null; else one message naming them all, as the
    original services said it (`username and email are required`)."""
    if any(data.get(key) is None for key in keys):
        names = " and ".join(keys)
        raise Invalid(f"{names} {'are' if len(keys) > 1 else 'is'} required")


def text(data: Mapping[str, Any], key: str, *, max_length: int = 1000) -> str:
    """A required, non-blank string (surrounding spaces removed)."""
    value = data.get(key)
    if value is None:
        raise Invalid(f"`{key}` is required")
    if not isinstance(value, str):
        raise Invalid(f"`{key}` must be a string")
    value = value.strip()
    if not value:
        raise Invalid(f"`{key}` must not be empty")
    if len(value) > max_length:
        raise Invalid(f"`{key}` is longer than {max_length} characters")
    return value


def email(data: Mapping[str, Any], key: str) -> str:
    """A required address: text of at most EMAIL_LENGTH characters that matches EMAIL."""
    value = text(data, key, max_length=EMAIL_LENGTH)
    if not _EMAIL.fullmatch(value):
        raise Invalid(f"`{key}` is not a valid email address: {value!r}")
    return value


def _given(data: Mapping[str, Any], key: str, default: Any, kind: str) -> Any:
    """The value of `key`, or `MISSING` for an absent optional one (the caller's default).

    An explicit null is never taken for the default: `{"quantity": null}` most likely
    comes from a number the sender could not encode (NaN, 1e400), not from a wish for 1."""
    if key not in data:
        if default is MISSING:
            raise Invalid(f"`{key}` is required")
        return MISSING
    value = data[key]
    if value is None:
        if default is MISSING:
            raise Invalid(f"`{key}` is required")
        raise Invalid(f"`{key}` must be {kind}, not null")
    return value


def integer(
    data: Mapping[str, Any],
    key: str,
    *,
    minimum: int | None = None,
    maximum: int = MAX_INTEGER,
    default: int | None = MISSING,
) -> int | None:
    """An integer within bounds; `default` makes it optional (absent, not null).

    JSON `true` is not an integer; 2.0 is 2, as JSON does not tell them apart (nor does
    the gateway's document). An integer beyond 64 bits arrives as a float (orjson parses
    it so) and is out of range like any other past `maximum`."""
    value = _given(data, key, default, "an integer")
    if value is MISSING:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"`{key}` must be an integer")
    if minimum is not None and value < minimum:
        raise Invalid(f"`{key}` is out of range: it must be at least {minimum}")
    if value > maximum:
        raise Invalid(f"`{key}` is out of range: it must be at most {maximum}")
    return value


def identifier(data: Mapping[str, Any], key: str) -> int:
    """A record id: a required integer from 1."""
    value = integer(data, key, minimum=1)
    assert value is not None  # required: `integer` raised otherwise
    return value


def choice(
    data: Mapping[str, Any], key: str, choices: Sequence[str], default: str = MISSING
) -> str:
    """One of `choices` (any case), or `default` when absent (not when null)."""
    kind = f"one of {', '.join(choices)}"
    value = _given(data, key, default, kind)
    if value is MISSING:
        return default
    if not isinstance(value, str) or value.lower() not in choices:
        raise Invalid(f"`{key}` must be {kind}")
    return value.lower()


def boolean(data: Mapping[str, Any], key: str, default: bool = MISSING) -> bool:
    """JSON `true` or `false` (not 0 or 1, nor "yes"), or `default` when absent (not null)."""
    value = _given(data, key, default, "true or false")
    if value is MISSING:
        return default
    if not isinstance(value, bool):
        raise Invalid(f"`{key}` must be true or false")
    return value
