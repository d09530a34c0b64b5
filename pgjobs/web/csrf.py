"""CSRF protection for the pages' forms: a double-submit token.

Each browser gets a random token in a SameSite=Strict, HttpOnly cookie, and
every form carries the same token in a hidden field; a POST whose field does
not match its cookie, or whose Origin is another site, is refused. No server
secret is needed, so any number of dashboard processes agree on it.

The JSON API takes no token (programs call it), but a browser could still be
made to POST to it from another site with the viewer's cookies: those requests
carry an Origin header naming the other site, and are refused the same way.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "pgjobs_csrf"
FIELD = "csrf_token"


def token(request: Request) -> str:
    """The browser's token, or a fresh one that :func:`remember` will set."""
    current = request.cookies.get(COOKIE)
    if current and len(current) >= 32:
        return current
    fresh = getattr(request.state, "pgjobs_csrf_new", None)
    if not fresh:
        fresh = secrets.token_urlsafe(32)
        request.state.pgjobs_csrf_new = fresh
    return str(fresh)


def remember(request: Request, response: Response) -> None:
    """Sets the cookie when this request made the token."""
    fresh = getattr(request.state, "pgjobs_csrf_new", None)
    if fresh:
        response.set_cookie(
            COOKIE,
            fresh,
            httponly=True,
            samesite="strict",
            path=request.scope.get("root_path") or "/",
        )


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def form_ok(request: Request) -> bool:
    """The form's token matches the cookie, and the origin is this site."""
    if not same_origin(request):
        return False
    cookie = request.cookies.get(COOKIE, "")
    form = await request.form()
    sent = form.get(FIELD)
    return bool(cookie) and isinstance(sent, str) and hmac.compare_digest(cookie, sent)
