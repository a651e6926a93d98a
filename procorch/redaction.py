"""Secrets out of sight: a URL's password is never printed, logged or served.

A Redis backend may be `redis://:PASSWORD@host:6379/0`; every message that names it
(a config error, an unreachable store, a worker's log line, a gateway's 503 served
without auth) shows `redis://:***@host:6379/0` instead. This module imports nothing of
procorch, so the config (the lowest layer) and the job stores can both use it.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme:// (if any), then the user part: everything up to the *last* @. Greedy on
# purpose: a password with an unencoded / or @ in it must still be hidden whole, and a
# URL that does not even parse (the config error reporting it) still gets redacted.
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<userinfo>.*)@", re.DOTALL)


def _split(url: str) -> tuple[str, str, str | None, str] | None:
    """(scheme://, user name, password or None, what follows the @) of a URL with a user
    part; None without one."""
    match = _USERINFO.match(url)
    if match is None:
        return None
    user, colon, password = match["userinfo"].partition(":")
    return match["head"] or "", user, password if colon else None, url[match.end() :]


def redact(url: str) -> str:
    """`url` with its password as *** (`redis://:***@host:6379/0`, `redis://bob:***@h`);
    a user part without a colon may be a password alone, so it is masked whole."""
    parts = _split(url)
    if parts is None:
        return url
    head, user, password, rest = parts
    shown = MASK if password is None else f"{user}:{MASK}"
    return f"{head}{shown}@{rest}"


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error message, say) with no trace of `url`'s secret: the URL
    redacted, and its password, as written or percent-decoded, masked wherever it is."""
    from urllib.parse import unquote  # here: the CLI's start imports this module

    text = text.replace(url, redact(url))
    parts = _split(url)
    if parts is None:
        return text
    _head, user, password, _rest = parts
    secret = user if password is None else password
    for form in sorted({secret, unquote(secret)}, key=len, reverse=True):
        if form:
            text = text.replace(form, MASK)
    return text
