"""Who may do what on the gateway: bearer tokens, the dashboard's session cookie, CSRF.

Three kinds of path:
- open: `/health` (load balancers, probes) and the dashboard's static assets;
- the dashboard and its API (`/ui`, `/api/...`): always the *control token*, also on
  loopback, since they show logs and events and start, stop and signal processes. The
  control token is `[gateway] token`, else the automatic one in the run directory
  (`token.py`), so it always exists. A program sends it as `Authorization: Bearer`; a
  browser gets it once in the URL `procorch dashboard` prints, and from then on holds a
  session cookie (HttpOnly, SameSite=Strict) derived from it;
- the rest (the originals' API): the configured token if there is one, else open.

A request that changes something and is authenticated by the cookie (which the browser
sends by itself) must also carry the page's CSRF token in `X-CSRF-Token`, and must not
come from another site (`Origin`, `Sec-Fetch-Site`). A bearer token is never sent by a
browser on its own, so a request carrying one needs neither.

Cookie and CSRF values are HMACs of the control token: nothing is stored, a gateway
restart keeps sessions, and a new token ends them. Neither value reveals the token.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import Response, request

from procorch.gateway.http import ApiError, error_response

COOKIE = "procorch_session"
CSRF_HEADER = "X-CSRF-Token"
OPEN_PATHS = frozenset({"/health"})  # answered without the token: for load balancers and probes
STATIC_PREFIX = "/ui/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def derived(token: str, purpose: str) -> str:
    """A value standing for `token` for one `purpose` (the cookie, the CSRF token)."""
    return hmac.new(token.encode(), f"procorch-{purpose}".encode(), hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    """Whether `given` is `expected`, compared in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def bearer() -> str | None:
    """The request's bearer token, if it has one (the scheme's name ignores case, RFC 9110)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def is_dashboard(path: str) -> bool:
    return path == "/ui" or path.startswith("/api/")


class Access:
    """The gateway's before_request check (see the module's docstring)."""

    def __init__(self, api_token: str | None, control_token: str) -> None:
        self.api_token = api_token
        self.control_token = control_token
        self.cookie_value = derived(control_token, "session")
        self.csrf_value = derived(control_token, "csrf")

    def check(self) -> Response | None:
        path = request.path
        if path in OPEN_PATHS or path.startswith(STATIC_PREFIX) or path == "/ui":
            return None  # /ui answers a missing or wrong session itself, as a page
        if is_dashboard(path):
            return self._dashboard()
        if self.api_token is None or same(bearer(), self.api_token):
            return None
        return unauthorized()

    def has_session(self) -> bool:
        return same(request.cookies.get(COOKIE), self.cookie_value)

    def valid_token(self, given: str | None) -> bool:
        return same(given, self.control_token)

    def _dashboard(self) -> Response | None:
        if self.valid_token(bearer()):
            return None
        if not self.has_session():
            return unauthorized()
        if request.method in SAFE_METHODS:
            return None
        if problem := cross_site_problem(request.headers.get("Origin"), request.host_url):
            return error_response(ApiError(403, problem))
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            return error_response(ApiError(403, "a cross-site request may not change anything"))
        if not same(request.headers.get(CSRF_HEADER), self.csrf_value):
            message = f"the {CSRF_HEADER} header is missing or wrong: reload the dashboard"
            return error_response(ApiError(403, message))
        return None


def cross_site_problem(origin: str | None, host_url: str) -> str | None:
    """Why a request from `origin` may not change anything here (None: it may): a
    browser names the page's origin on every POST, and it must be this gateway's."""
    if origin is None:
        return None
    own = urlsplit(host_url)
    given = urlsplit(origin)
    if (given.scheme, given.netloc) == (own.scheme, own.netloc):
        return None
    return "a request from another site may not change anything"


def unauthorized() -> Response:
    response = error_response(ApiError(401, "a valid bearer token is required"))
    response.headers["WWW-Authenticate"] = 'Bearer realm="procorch"'
    return response


def session_cookie(response: Response, value: str, secure: bool) -> Response:
    """`response`, setting the dashboard's session cookie: HttpOnly (no script reads it),
    SameSite=Strict (no other site's page sends it), for the whole gateway."""
    response.set_cookie(COOKIE, value, httponly=True, samesite="Strict", secure=secure, path="/")
    return response
