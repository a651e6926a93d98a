"""Checking the `data` of a request: one function per kind of field, each raising `Invalid`
with a message that names the field, so every service validates the same way."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from procorch.services.protocol import Invalid

_MISSING: Any = object()
# Deliberately loose (the only real check of an address is mail reaching it): one @,
# no spaces, and a dot in the domain.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
MAX_PAGE = 1000


def text(data: dict[str, Any], key: str, *, max_length: int = 1000) -> str:
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


def email(data: dict[str, Any], key: str) -> str:
    value = text(data, key, max_length=254)
    if not _EMAIL.fullmatch(value):
        raise Invalid(f"`{key}` is not a valid email address: {value!r}")
    return value


def integer(
    data: dict[str, Any],
    key: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    default: int | None = _MISSING,
) -> int | None:
    """An integer (JSON `true` is not one), within bounds; `default` makes it optional."""
    value = data.get(key)
    if value is None:
        if default is _MISSING:
            raise Invalid(f"`{key}` is required")
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"`{key}` must be an integer")
    if minimum is not None and value < minimum:
        raise Invalid(f"`{key}` must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise Invalid(f"`{key}` must be at most {maximum}")
    return value


def identifier(data: dict[str, Any], key: str) -> int:
    """A record id: a required integer from 1."""
    value = integer(data, key, minimum=1, maximum=2**63 - 1)
    assert value is not None  # required: `integer` raised otherwise
    return value


def choice(data: dict[str, Any], key: str, choices: Sequence[str], default: str) -> str:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value.lower() not in choices:
        raise Invalid(f"`{key}` must be one of {', '.join(choices)}")
    return value.lower()


def page(data: dict[str, Any], default_limit: int = 100) -> tuple[int, int]:
    """`limit` (1 to MAX_PAGE) and `offset` (from 0) of a list action."""
    limit = integer(data, "limit", minimum=1, maximum=MAX_PAGE, default=default_limit)
    offset = integer(data, "offset", minimum=0, maximum=2**63 - 1, default=0)
    return limit, offset
