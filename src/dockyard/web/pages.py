"""Dashboard pages. Handlers call the services exactly as the API routes do, with the session's Actor."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from dockyard.accounts import tokens, users
from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, client_ip
from dockyard.errors import DockyardError, NotFound, Unauthorized
from dockyard.provisioner import builds
from dockyard.templates import service as templates_service
from dockyard.web import account, admin, apps, create, live, session, workspace
from dockyard.web.assets import static_files
from dockyard.web.render import error_page, render
from dockyard.web.session import CSRF_FIELD, LoginRequired, page_actor
from dockyard.workspaces import service as workspaces
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(include_in_schema=False)
PageActor = Annotated[Actor, Depends(page_actor)]


def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return session.login_redirect(exc.next_url)


def install(app: FastAPI) -> None:
    app.mount("/static", static_files(), name="static")
    # First: `/workspaces/events` must win over `/workspaces/{ref}`.
    app.include_router(live.router)
    app.include_router(create.router)
    app.include_router(apps.router)
    app.include_router(account.router)
    app.include_router(admin.router)
    # Before `router`: its `POST /workspaces/{ref}/{action}` would take restart, update and parameters.
    app.include_router(workspace.router)
    app.include_router(router)
    app.add_exception_handler(LoginRequired, _login_required)


# --- login ---------------------------------------------------------------------------------------------------


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/workspaces", status_code=303)


def _login_page(
    request: Request, *, next_url: str, username: str = "", message: str = "", status_code: int = 200
) -> HTMLResponse:
    token = session.login_csrf(request)
    response = render(
        request,
        "login.html",
        {"next": session.safe_next(next_url), "username": username, "message": message, "login_csrf": token},
        status_code=status_code,
    )
    session.set_login_csrf(request, response, token)
    return response


@router.get("/login")
def login_form(
    request: Request, next: Annotated[str, Query(max_length=2048)] = "/workspaces"
) -> HTMLResponse:
    return _login_page(request, next_url=next)


@router.post("/login")
async def login(request: Request, db: DbSession) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    username, password, next_url = (str(form.get(k) or "") for k in ("username", "password", "next"))
    if not session.check_login_csrf(request, form.get(CSRF_FIELD)):
        message = "The login form expired; please try again."
        return _login_page(request, next_url=next_url, username=username, message=message, status_code=400)
    try:
        body = wire.LoginRequest(username=username, password=password)
        _, key, _ = users.login(db, body, ip=client_ip(request))
    except ValidationError:
        message = "Incorrect username or password."
        return _login_page(request, next_url=next_url, username=username, message=message, status_code=401)
    except Unauthorized as exc:
        return _login_page(
            request, next_url=next_url, username=username, message=exc.message, status_code=401
        )
    response = RedirectResponse(session.safe_next(next_url), status_code=303)
    session.set_session(request, response, key)
    response.delete_cookie(session.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, db: DbSession, actor: PageActor) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    try:
        session.check_session_csrf(request, form.get(CSRF_FIELD))
    except DockyardError as exc:
        return error_page(request, actor, exc)
    if actor.token_id:
        # As `POST /users/logout`: only a password login's own session token is revoked, never an API token.
        user = users.get(db, actor, "me")
        token = tokens.get(db, user, actor.token_id)
        if token.login_type == "password":
            tokens.revoke(db, actor, token)
    response = RedirectResponse("/login", status_code=303)
    session.clear_session(request, response)
    return response


# --- templates -----------------------------------------------------------------------------------------------


@router.get("/templates")
def templates_page(request: Request, db: DbSession, actor: PageActor) -> HTMLResponse:
    try:
        actor.require(Scope.TEMPLATE_READ)
        listed = templates_service.visible(actor, templates_service.catalog.load(db, actor))
    except DockyardError as exc:
        return error_page(request, actor, exc)
    return render(request, "templates.html", {"templates": listed}, actor=actor)


# --- workspaces ----------------------------------------------------------------------------------------------


@router.get("/workspaces")
def workspaces_page(
    request: Request,
    db: DbSession,
    actor: PageActor,
    status: Annotated[str, Query(max_length=16)] = "",
    template: Annotated[str, Query(max_length=64)] = "",
    owner: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    try:
        actor.require(Scope.WORKSPACE_READ)
        wanted = wire.WorkspaceStatus(status) if status else None
    except DockyardError as exc:
        return error_page(request, actor, exc)
    except ValueError:
        wanted = None
        status = ""
    rows, count = workspaces.search(
        db,
        actor,
        template=template or None,
        owner=owner or None,
        status=wanted,
        limit=live.PAGE_SIZE,
        offset=(page - 1) * live.PAGE_SIZE,
    )
    listed = workspaces.to_wire_many(db, rows)
    catalog = templates_service.visible(actor, templates_service.catalog.load(db, actor))
    filters = {k: v for k, v in (("status", status), ("template", template), ("owner", owner)) if v}
    context = {
        "workspaces": listed,
        "count": count,
        "status": status,
        "template": template,
        "owner": owner,
        "templates": catalog,
        "page": page,
        "first": (page - 1) * live.PAGE_SIZE + 1,
        "pages": max(1, -(-count // live.PAGE_SIZE)),
        "query": urlencode(filters),
        "events_query": urlencode({k: v for k, v in (*filters.items(), ("page", page)) if k != "status"}),
    }
    return render(request, "workspaces.html", context, actor=actor)


def _load(db: DbSession, actor: Actor, ref: str) -> wire.Workspace:
    actor.require(Scope.WORKSPACE_READ)
    row = workspaces.get(db, actor, ref)
    return workspaces.to_wire(db, workspaces.load(db, row))


@router.get("/workspaces/{ref}")
def workspace_page(request: Request, db: DbSession, actor: PageActor, ref: str) -> HTMLResponse:
    try:
        found = _load(db, actor, ref[:80])
    except DockyardError as exc:
        return error_page(request, actor, exc)
    context = workspace.page_context(
        db, found, apps=workspace.workspace_apps(request, db, found), saved=request.query_params.get("saved")
    )
    return render(request, "workspace.html", context, actor=actor)


@router.get("/workspaces/{ref}/terminal")
def terminal_page(
    request: Request,
    db: DbSession,
    actor: PageActor,
    ref: str,
    session: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    """xterm.js tabs on `GET /api/v2/workspaces/{id}/pty` (static/terminal.js); `session` picks a tab."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", session):
        # Not a terminal id this page made: open a fresh tab rather than fail the page.
        session = ""
    try:
        found = _load(db, actor, ref[:80])
        actor.require(Scope.WORKSPACE_CONNECT)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    context = {"w": found, "session": session}
    return render(request, "terminal.html", context, actor=actor, inline_styles=True)


@router.get("/workspaces/{ref}/detail")
def workspace_detail(request: Request, db: DbSession, actor: PageActor, ref: str) -> HTMLResponse:
    """The part of the workspace page that changes; the page swaps it in on each server-sent event."""
    try:
        found = _load(db, actor, ref[:80])
    except NotFound:
        return render(request, "_deleted.html", {}, actor=actor)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    context = {"w": found, "apps": workspace.workspace_apps(request, db, found)}
    return render(request, "_workspace_detail.html", context, actor=actor)


_ACTIONS = {
    "start": (wire.Transition.START, Scope.WORKSPACE_OPERATE),
    "stop": (wire.Transition.STOP, Scope.WORKSPACE_OPERATE),
    "delete": (wire.Transition.DELETE, Scope.WORKSPACE_DELETE),
}


@router.post("/workspaces/{ref}/{action}")
async def workspace_action(
    request: Request, db: DbSession, actor: PageActor, ref: str, action: str
) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    try:
        session.check_session_csrf(request, form.get(CSRF_FIELD))
        if action not in _ACTIONS:
            raise NotFound(f"No action {action!r}.")
        transition, scope = _ACTIONS[action]
        actor.require(Scope.WORKSPACE_READ)
        row = workspaces.get(db, actor, ref[:80])
        actor.require(scope)
        builds.create_build(db, row, transition, actor=actor)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    target = "/workspaces" if transition == wire.Transition.DELETE else f"/workspaces/{row.id}"
    return RedirectResponse(target, status_code=303)
