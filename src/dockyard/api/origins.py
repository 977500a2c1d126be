"""Cross-site request defences for browser sessions: Origin checks and CSRF tokens.

A browser sends the session cookie with requests that other pages start: a form posted from another site,
or a WebSocket opened by a page on another localhost port (cookies do not separate ports, and SameSite
counts every port of a host as the same site, so a workspace's own web app on `localhost:8080` is "same
site" as Dockyard on `localhost:3000`). So a request that carries no bearer credential of its own is checked
here before any route sees it:

- a state-changing request (not GET/HEAD/OPTIONS) or a WebSocket upgrade whose `Origin` (or, without one,
  `Referer`) is not this server's own origin is refused with 403;
- a state-changing request authenticated by the cookie must also carry the session's CSRF token when it is
  a form (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`: the bodies another site
  can post without a preflight) or when the browser sent neither `Origin` nor `Referer`. The token goes in
  the `X-CSRF-Token` header or the form field `csrf_token`.

The token is an HMAC of the session key under a deployment key, not a random double-submit cookie: a page on
another port can set cookies for this host, but it cannot compute the token of the victim's session.

Requests with `Authorization: Bearer` (or the `Dockyard-Session-Token` header) are left alone: a page cannot
make a browser attach those to a cross-site request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from dockyard import logs
from dockyard.api.errors import error_response
from dockyard.errors import Validation

log = logs.get(__name__)

SESSION_COOKIE = "dockyard_session"
CSRF_COOKIE = "dockyard_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
CSRF_KEY_NAME = "csrf"
# Path-style workspace app URLs (apps/routing.py): pages under them never act with the dashboard's cookie.
APP_PATH_PREFIX = "/@"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Bodies a page on another site can send without a CORS preflight.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
# Form bodies read whole to find the `csrf_token` field; larger ones must send the header.
FORM_BUFFER_LIMIT = 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        default = _DEFAULT_PORTS.get(self.scheme)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def parse_origin(value: str) -> Origin | None:
    """`scheme://host[:port]` (an Origin header, or the origin part of a URL); None for `null` or garbage."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return Origin(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme])


def generate_key() -> str:
    return secrets.token_urlsafe(32)


def csrf_token_for(session_key: str, key: bytes) -> str:
    """The CSRF token of one session: forms rendered for that session carry it."""
    digest = hmac.new(key, b"dockyard-csrf\0" + session_key.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_token(request: HTTPConnection) -> str | None:
    """The token a page served to this request's browser session puts in its forms (`csrf_token` field) or
    sends as `X-CSRF-Token`; None without a session cookie."""
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        return None
    key: bytes = request.app.state.csrf_key
    return csrf_token_for(session, key)


class Policy:
    """Which origins may use the session cookie: the request's own host, `--access-url` and
    `--allowed-origin`s."""

    def __init__(self, *, access_url: str = "", allowed: list[str] | tuple[str, ...] = ()) -> None:
        configured = [parse_origin(o) for o in (access_url, *allowed) if o]
        self.allowed = frozenset(o for o in configured if o is not None)

    def allows(self, origin: Origin, host_header: str) -> bool:
        if origin in self.allowed:
            return True
        # Same host and port as the request was sent to. The scheme is not compared: behind a proxy that
        # ends TLS the server cannot tell, and a Host without a port means the origin scheme's default port.
        own = parse_origin(f"{origin.scheme}://{host_header}") if host_header else None
        return own is not None and (own.host, own.port) == (origin.host, origin.port)


def _credential(headers: Headers, cookies: dict[str, str]) -> str:
    if headers.get("authorization") or headers.get("dockyard-session-token"):
        return "bearer"
    return "cookie" if cookies.get(SESSION_COOKIE) else "none"


def _cookies(headers: Headers) -> dict[str, str]:
    return HTTPConnection({"type": "http", "headers": headers.raw}).cookies


class CrossSiteMiddleware:
    def __init__(self, app: ASGIApp, *, policy: Policy, csrf_key: bytes) -> None:
        self.app = app
        self.policy = policy
        self.csrf_key = csrf_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if kind == "http" and scope["method"] in SAFE_METHODS:
            cookies = _cookies(headers) if "referer" in headers or "origin" in headers else {}
            refusal = self._app_page_refusal(headers) if cookies.get(SESSION_COOKIE) else None
            if refusal is not None:
                await self._refuse(scope, receive, send, *refusal)
                return
            await self.app(scope, receive, send)
            return
        cookies = _cookies(headers)
        credential = _credential(headers, cookies)
        if credential == "cookie":
            refusal = self._app_page_refusal(headers)
            if refusal is not None:
                await self._refuse(scope, receive, send, *refusal)
                return
        if credential == "bearer":
            await self.app(scope, receive, send)
            return
        refusal = self._origin_refusal(headers, websocket=kind == "websocket")
        if refusal is not None:
            log.info("cross-origin request refused", path=scope["path"], origin=refusal[1])
            await self._refuse(scope, receive, send, *refusal)
            return
        if kind == "websocket" or credential != "cookie":
            await self.app(scope, receive, send)
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        browser_said_where = "origin" in headers or "referer" in headers
        if content_type not in FORM_TYPES and browser_said_where:
            # JSON (or any non-simple body) from another origin needs a CORS preflight, which this server
            # never grants; the Origin check above covered the rest.
            await self.app(scope, receive, send)
            return
        expected = csrf_token_for(cookies[SESSION_COOKIE], self.csrf_key)
        given = headers.get(CSRF_HEADER)
        replay: Receive = receive
        if given is None and content_type in FORM_TYPES[:2]:
            given, replay = await _form_token(scope, receive)
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            problem = "missing" if given is None else "does not match this session"
            log.info("csrf token refused", path=scope["path"], problem=problem)
            await self._refuse(
                scope,
                replay,
                send,
                "Missing or invalid CSRF token.",
                f"{problem}; send the session's token as the {CSRF_HEADER} header or the {CSRF_FIELD} "
                "form field, or use an API token (Authorization: Bearer)",
                Validation(CSRF_FIELD, problem),
            )
            return
        await self.app(scope, replay, send)

    def _app_page_refusal(self, headers: Headers) -> tuple[str, str, Validation] | None:
        """A cookie-authenticated request that a workspace app's page made (its Referer is an app path on this
        origin, or it comes from the opaque origin app pages are sandboxed into): refused, even a GET."""
        referer = headers.get("referer", "")
        origin = headers.get("origin", "")
        from_app = origin == "null" or urlsplit(referer).path.startswith(APP_PATH_PREFIX)
        if not from_app:
            return None
        return (
            "Requests from workspace apps cannot use the dashboard session.",
            "App pages share this server's origin only by path; the API refuses the visitor's cookie from them. "
            "Use an API token (Authorization: Bearer).",
            Validation("Referer" if referer else "Origin", "a workspace app's page"),
        )

    def _origin_refusal(self, headers: Headers, *, websocket: bool) -> tuple[str, str, Validation] | None:
        host = headers.get("host", "")
        header = "Origin" if "origin" in headers else "Referer" if "referer" in headers else None
        if header is None:
            return None
        raw = headers[header.lower()]
        origin = parse_origin(raw)
        if origin is not None and self.policy.allows(origin, host):
            return None
        what = "WebSocket" if websocket else "request"
        shown = str(origin) if origin is not None and header == "Referer" else raw[:200]
        return (
            f"Cross-origin {what} refused: {shown} is not this server's origin.",
            f"Browser sessions work only from the server's own pages ({host or 'its host'}); other clients "
            "send an API token (Authorization: Bearer). An operator can allow another origin with "
            "--access-url or --allowed-origin.",
            Validation(header, f"{shown} is not allowed"),
        )

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, message: str, detail: str, validation: Validation
    ) -> None:
        response = error_response(403, message, detail, [validation])
        if scope["type"] == "websocket":
            websocket = WebSocket(scope, receive, send)
            if "websocket.http.response" in scope.get("extensions", {}):
                await websocket.send_denial_response(response)
            else:
                await websocket.close(4403, message[:120])
            return
        await response(scope, receive, send)


async def _form_token(scope: Scope, receive: Receive) -> tuple[str | None, Receive]:
    """The `csrf_token` field of a form body, and a receive that replays the body for the route."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more and size <= FORM_BUFFER_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    if size > FORM_BUFFER_LIMIT:
        # Not held in memory to look for a field: a large upload sends the X-CSRF-Token header instead.
        return None, replay

    headers = Headers(scope=scope)
    if headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        values = parse_qs(body.decode("latin-1"), max_num_fields=1000).get(CSRF_FIELD)
        return (values[0] if values else None), replay
    parse_done = False

    async def once() -> Message:
        nonlocal parse_done
        if not parse_done:
            parse_done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    try:
        form = await Request(scope, once).form(max_files=100, max_fields=1000)
    except HTTPException:
        # A malformed multipart body: no token can be read from it, so it is refused as missing one.
        return None, replay
    try:
        value = form.get(CSRF_FIELD)
    finally:
        await form.close()
    return (value if isinstance(value, str) else None), replay
