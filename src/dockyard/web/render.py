"""Rendering pages: the Jinja2 environment, security headers, and the error page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request

from dockyard.accounts.actor import Actor
from dockyard.errors import DockyardError
from dockyard.web import session
from dockyard.web.assets import static_url
from dockyard_sdk import models as wire

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals["static"] = static_url


def size_text(size: int) -> str:
    """Bytes in binary units, as templates write them (and `dockyard show` prints them): 512 MiB, 1.5 GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"


_env.filters["size"] = size_text
_env.globals["statuses"] = [s.value for s in wire.WorkspaceStatus if s != wire.WorkspaceStatus.DELETED]
pages = Jinja2Templates(env=_env)

# Scripts and styles only from this origin; htmx's inline indicator style is turned off in base.html.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    actor: Actor | None = None,
    inline_styles: bool = False,
) -> HTMLResponse:
    context = {"actor": actor, "csrf": session.session_csrf(request) if actor else "", **context}
    response = pages.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    if inline_styles:
        # xterm.js sizes its DOM renderer with <style> elements it creates; scripts stay 'self' only.
        response.headers["content-security-policy"] = CSP.replace(
            "style-src 'self'", "style-src 'self' 'unsafe-inline'"
        )
    return response


def error_page(request: Request, actor: Actor | None, exc: DockyardError) -> HTMLResponse:
    return render(
        request,
        "error.html",
        {"message": exc.message, "detail": exc.detail, "status": exc.status_code},
        status_code=exc.status_code,
        actor=actor,
    )
