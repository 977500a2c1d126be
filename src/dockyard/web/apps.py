"""The dashboard's end of opening an app on its own host: `/apps/auth` hands a logged-in user a ticket."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession
from dockyard.apps import access, tickets
from dockyard.apps.routing import AUTH_PATH
from dockyard.errors import BadRequest, DockyardError
from dockyard.web.render import error_page
from dockyard.web.session import page_actor

router = APIRouter(include_in_schema=False)


@router.get("/apps/auth")
def app_auth(
    request: Request,
    db: DbSession,
    actor: Annotated[Actor, Depends(page_actor)],
    redirect: Annotated[str, Query(max_length=4096)],
) -> Response:
    """Back to an app host with a one-minute ticket, for an app this user may open."""
    wildcard = request.app.state.apps_wildcard
    try:
        parts = urlsplit(redirect)
        target = (
            wildcard.match(parts.netloc)
            if wildcard is not None and parts.scheme in ("http", "https")
            else None
        )
        if target is None:
            raise BadRequest(
                "Not an app URL.", detail=f"{redirect[:200]!r} is not under the wildcard access URL."
            )
        access.authorize(db, actor, access.resolve(db, target))
        if actor.token_id is None:
            raise BadRequest("This session cannot open apps on their own hosts.")
    except DockyardError as exc:
        result: HTMLResponse = error_page(request, actor, exc)
        return result
    ticket = tickets.sign(
        request.app.state.apps_key,
        purpose="ticket",
        host=parts.netloc,
        token_id=actor.token_id,
        seconds=tickets.TICKET_SECONDS,
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    back = f"{parts.scheme}://{parts.netloc}{AUTH_PATH}?{urlencode({'ticket': ticket, 'redirect': path})}"
    return RedirectResponse(back, status_code=303)
