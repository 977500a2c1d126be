"""The workspace page's own forms and fragments: live stats, the parameters form, restart and update.

As everywhere in the dashboard, handlers call the services the API routes call (`workspaces.update` as
`PATCH /api/v2/workspaces/{id}`, `provisioner/builds.py` through `provisioner/restart.py`), with the session's
Actor and the same scopes.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession
from dockyard.apps import service as apps_service
from dockyard.errors import DockyardError, Validation
from dockyard.provisioner import restart
from dockyard.templates import service as templates_service
from dockyard.web import session
from dockyard.web.create import MAX_FIELDS, values_from_form
from dockyard.web.render import error_page, render
from dockyard.web.session import CSRF_FIELD, page_actor
from dockyard.workspaces import service as workspaces
from dockyard_sdk import models as wire
from dockyard_sdk.manifest import ParameterSpec
from dockyard_sdk.models import Scope

router = APIRouter(include_in_schema=False)
PageActor = Annotated[Actor, Depends(page_actor)]
# How often the page asks for the stats fragment; the agent reports every 15 s by default.
STATS_POLL_SECONDS = 5


def text_of(value: Any) -> str:
    """A stored parameter value as a form field shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


def mutable_specs(db: Session, workspace: wire.Workspace) -> list[ParameterSpec]:
    """The parameters of the version the workspace will start with next that may still change."""
    template = workspaces.load_id(db, workspace.id).workspace.template
    version = templates_service.get_version(db, template, workspace.template_version_id)
    manifest = templates_service.version_to_wire(version).manifest
    return [spec for spec in manifest.parameters if spec.mutable]


def page_context(db: Session, workspace: wire.Workspace, **extra: Any) -> dict[str, Any]:
    """What workspace.html needs besides the apps: the update form's fields, filled with the stored values."""
    specs = mutable_specs(db, workspace)
    context: dict[str, Any] = {
        "w": workspace,
        "specs": specs,
        "values": {s.name: text_of(workspace.parameters.get(s.name, s.default)) for s in specs},
        "errors": {},
        "form_message": "",
        "general": [],
        "stats_poll": STATS_POLL_SECONDS,
    }
    context.update(extra)
    return context


def workspace_apps(request: Request, db: Session, workspace: wire.Workspace) -> list[wire.WorkspaceApp]:
    from dockyard.api.routes.apps import base_url

    return apps_service.list_apps(
        db,
        workspaces.load_id(db, workspace.id).workspace,
        base_url=base_url(request),
        wildcard=request.app.state.apps_wildcard,
        checker=getattr(request.app.state, "apps_health", None),
    )


def _load(db: Session, actor: Actor, ref: str) -> wire.Workspace:
    actor.require(Scope.WORKSPACE_READ)
    row = workspaces.get(db, actor, ref[:80])
    return workspaces.to_wire(db, workspaces.load(db, row))


@router.get("/workspaces/{ref}/stats")
def workspace_stats(request: Request, db: DbSession, actor: PageActor, ref: str) -> HTMLResponse:
    """Resource use the agent last reported, polled by the page every few seconds."""
    try:
        workspace = _load(db, actor, ref)
    except DockyardError as exc:
        # A 404 for a deleted workspace too: htmx swaps nothing on an error, and the page's events say "deleted".
        return error_page(request, actor, exc)
    return render(
        request, "_workspace_stats.html", {"w": workspace, "stats_poll": STATS_POLL_SECONDS}, actor=actor
    )


def _schedule(request: Request, actor: Actor, workspace_id: str, stop: str) -> None:
    tasks: set[asyncio.Task[None]] = request.app.state.background_tasks
    task = asyncio.ensure_future(
        restart.finish(request.app.state.sessions, actor, workspace_id, stop, timeout=restart.STOP_TIMEOUT)
    )
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _restart(request: Request, db: Session, actor: Actor, ref: str, *, version: str | None) -> Response:
    actor.require(Scope.WORKSPACE_READ)
    row = workspaces.get(db, actor, ref[:80])
    actor.require(Scope.WORKSPACE_OPERATE)
    if version is not None:
        # As `dockyard update --version active --restart`: the version is recorded, the restart applies it.
        workspaces.update(db, actor, row, wire.UpdateWorkspaceRequest(template_version_id=version))
    stop = restart.begin(db, actor, row)
    if stop is not None:
        _schedule(request, actor, row.id, stop.id)
    return RedirectResponse(f"/workspaces/{row.id}", status_code=303)


@router.post("/workspaces/{ref}/restart")
async def restart_workspace(request: Request, db: DbSession, actor: PageActor, ref: str) -> Response:
    """Stop, then start again once the stop has finished (a stopped workspace is just started)."""
    form = await request.form(max_files=0, max_fields=10)
    try:
        session.check_session_csrf(request, form.get(CSRF_FIELD))
        return await _restart(request, db, actor, ref, version=None)
    except DockyardError as exc:
        return error_page(request, actor, exc)


@router.post("/workspaces/{ref}/update")
async def update_workspace(request: Request, db: DbSession, actor: PageActor, ref: str) -> Response:
    """Move to the template's active version and restart to apply it."""
    form = await request.form(max_files=0, max_fields=10)
    try:
        session.check_session_csrf(request, form.get(CSRF_FIELD))
        return await _restart(request, db, actor, ref, version="active")
    except DockyardError as exc:
        return error_page(request, actor, exc)


@router.post("/workspaces/{ref}/parameters")
async def update_parameters(request: Request, db: DbSession, actor: PageActor, ref: str) -> Response:
    """The update form: the mutable parameters, validated by `workspaces.update` (the API's own messages at the
    fields); "apply now" restarts the workspace, otherwise they apply at its next start."""
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    try:
        session.check_session_csrf(request, form.get(CSRF_FIELD))
        workspace = _load(db, actor, ref)
        actor.require(Scope.WORKSPACE_OPERATE)
    except DockyardError as exc:
        return error_page(request, actor, exc)
    specs = mutable_specs(db, workspace)
    sent, typed = values_from_form(specs, form)
    row = workspaces.get(db, actor, workspace.id)
    try:
        workspaces.update(db, actor, row, wire.UpdateWorkspaceRequest(parameters=sent))
        if form.get("apply") == "true":
            return await _restart(request, db, actor, workspace.id, version=None)
    except DockyardError as exc:
        db.rollback()
        return _refused(request, db, actor, workspace, specs, typed=typed, exc=exc)
    return RedirectResponse(f"/workspaces/{workspace.id}?saved=parameters", status_code=303)


def _refused(
    request: Request,
    db: Session,
    actor: Actor,
    workspace: wire.Workspace,
    specs: list[ParameterSpec],
    *,
    typed: dict[str, str],
    exc: DockyardError,
) -> HTMLResponse:
    errors: dict[str, str] = {}
    general: list[str] = []
    for problem in exc.validations or [Validation("", exc.detail or "")]:
        field = problem.field.removeprefix("parameters.")
        if any(s.name == field for s in specs):
            errors.setdefault(field, problem.detail)
        elif problem.detail:
            general.append(str(problem) if problem.field else problem.detail)
    context = page_context(
        db,
        workspace,
        values=typed,
        errors=errors,
        general=general,
        form_message=exc.message,
        apps=workspace_apps(request, db, workspace),
    )
    return render(request, "workspace.html", context, status_code=exc.status_code, actor=actor)
