"""What crosses the proxy besides the bodies: the headers each way, and the pages it answers with itself."""

from __future__ import annotations

import contextlib
import html
from http.cookies import SimpleCookie

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, Response
from starlette.types import Scope

from dockyard.api.errors import error_response
from dockyard.apps.routing import Target
from dockyard.errors import DockyardError

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
# An opaque origin for path apps: scripts, forms, popups and downloads work; the dashboard's origin does not.
PATH_APP_CSP = (
    "sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox allow-downloads "
    "allow-modals allow-pointer-lock allow-presentation"
)
DOCKYARD_COOKIES = ("dockyard_",)


def wants_html(headers: Headers) -> bool:
    return "text/html" in headers.get("accept", "")


def _strip_cookies(value: str) -> str:
    kept = []
    for part in value.split(";"):
        name = part.split("=", 1)[0].strip()
        if name and not name.startswith(DOCKYARD_COOKIES):
            kept.append(part.strip())
    return "; ".join(kept)


def upstream_headers(headers: Headers, scope: Scope, target: Target) -> list[tuple[bytes, bytes]]:
    """What the app receives: the request's headers without hop-by-hop ones and without any Dockyard credential."""
    out: list[tuple[bytes, bytes]] = []
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if name in HOP_BY_HOP or name.startswith("sec-websocket-") or name == "dockyard-session-token":
            continue
        value = raw_value.decode("latin-1")
        if name == "authorization" and value.lower().startswith("bearer dy_"):
            continue
        if name == "cookie":
            value = _strip_cookies(value)
            if not value:
                continue
        out.append((raw_name, value.encode("latin-1")))
    client = scope.get("client")
    host = headers.get("host", "")
    out += [
        (b"host", host.encode("latin-1")),
        (b"x-forwarded-host", host.encode("latin-1")),
        (b"x-forwarded-proto", scope.get("scheme", "http").encode()),
    ]
    if client:
        out.append((b"x-forwarded-for", str(client[0]).encode()))
    if target.prefix:
        out.append((b"x-forwarded-prefix", target.prefix.encode("latin-1")))
    return out


def response_headers(raw: list[tuple[bytes, bytes]], target: Target) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in raw:
        lower = name.lower()
        if lower.decode("latin-1") in HOP_BY_HOP:
            continue
        if lower == b"set-cookie" and not target.subdomain:
            cookie = SimpleCookie()
            with contextlib.suppress(Exception):
                cookie.load(value.decode("latin-1"))
            if not cookie or any(k.startswith(DOCKYARD_COOKIES) for k in cookie):
                continue
        out.append((name, value))
    if not target.subdomain:
        out.append((b"content-security-policy", PATH_APP_CSP.encode()))
    return out


def unreachable_page(exc: DockyardError, *, html_page: bool) -> Response:
    if not html_page:
        return error_response(exc.status_code, exc.message, exc.detail)
    title = "App not reachable yet" if exc.status_code == 502 else html.escape(exc.message)
    body = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='color-scheme' content='light dark'>"
        f"<title>{title}</title></head><body style='font-family:system-ui;max-width:40rem;margin:3rem auto'>"
        f"<h1>{title}</h1><p>{html.escape(exc.message)}</p><p><code>{html.escape(exc.detail)}</code></p>"
        "<p>Reload this page in a moment.</p></body></html>"
    )
    return HTMLResponse(
        body,
        status_code=exc.status_code,
        headers={
            "cache-control": "no-store",
            "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )
