"""The dashboard's session: the login cookie, CSRF tokens on forms, and sending anonymous visitors to login.

The session cookie is the same `dockyard_session` token the API's login sets (HttpOnly, SameSite=Lax, Secure
under TLS), so pages and `fetch`/SSE calls from them authenticate alike. Forms carry a CSRF token bound to the
session: an HMAC of the session key, which a page on another origin can neither read nor compute. The login
form, before there is a session, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote, urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response

from dockyard.accounts import users
from dockyard.accounts.actor import Actor
from dockyard.api import origins
from dockyard.api.deps import SESSION_COOKIE, current_actor
from dockyard.errors import BadRequest, Unauthorized

LOGIN_CSRF_COOKIE = "dockyard_login_csrf"
# The cross-site middleware (api/origins.py) reads the same field: one token satisfies both checks.
CSRF_FIELD = "csrf_token"


class LoginRequired(Exception):
    """Raised by page dependencies when there is no valid session; answered with a redirect to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def secure(request: HTTPConnection) -> bool:
    return request.url.scheme == "https"


def set_session(request: Request, response: Response, key: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        key,
        httponly=True,
        samesite="lax",
        secure=secure(request),
        max_age=int(users.SESSION_LIFETIME.total_seconds()),
        path="/",
    )


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure(request))


def safe_next(value: str | None) -> str:
    """Only a path on this origin: `//evil.example`, `/\\evil`, or an absolute URL would be an open redirect."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/workspaces"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(c in value for c in "\r\n\\"):
        return "/workspaces"
    return value


def login_redirect(next_url: str) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(safe_next(next_url), safe='/')}", status_code=303)


async def page_actor(request: Request) -> Actor:
    """The logged-in user, from the session cookie only; anyone else is sent to log in and come back."""
    key = request.cookies.get(SESSION_COOKIE)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or request.url.path.endswith(("/events", "/detail", "/stats")):
        # Coming back to a form's target or a page fragment would be a 405 or a bare fragment: go home.
        here = "/workspaces"
    if not key:
        raise LoginRequired(here)
    try:
        return await current_actor(request)
    except (Unauthorized, BadRequest):
        raise LoginRequired(here) from None


def session_csrf(request: HTTPConnection) -> str:
    """The session's CSRF token, the one the cross-site middleware checks on every cookie-authenticated form."""
    return origins.csrf_token(request) or ""


def check_session_csrf(request: Request, submitted: object) -> None:
    if not isinstance(submitted, str) or not hmac.compare_digest(submitted, session_csrf(request)):
        raise BadRequest("The form has expired.", detail="Reload the page and try again.")


def login_csrf(request: Request) -> str:
    """The login form's token: the cookie's value if it has one, else a fresh one the caller must set."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)


def set_login_csrf(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure(request), path="/login"
    )


def check_login_csrf(request: Request, submitted: object) -> bool:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(cookie) and isinstance(submitted, str) and hmac.compare_digest(submitted, cookie or "")
